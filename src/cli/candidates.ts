/**
 * `slotsync candidates --url U1 --url U2 … [--slots a,b] [--json]`: asks the slotsync beside
 * every node (GET /ready) and ranks the nodes an orchestrator may promote: safe first, then
 * the most WAL received, then the least slot lag, with what a promotion of each would do to
 * every consumer. A node that does not answer is listed as unreachable, never as safe.
 * Exit code: 0 when a safe candidate exists (its URL on the last line, `best` in JSON), 1
 * when none, 2 on usage errors.
 */
import { messageOf, SlotSyncError } from '../errors.js';
import { type Asked, formatRanking, rankCandidates } from '../sync/candidates.js';
import type { Safety } from '../sync/safety.js';
import { slotList } from '../sync/select.js';

export const CANDIDATES_USAGE =
  'usage: slotsync candidates --url http://node1:8432 --url http://node2:8432 … [--slots a,b] [--json]';

/** How long one node may take to answer. */
const ASK_TIMEOUT_MS = 10_000;

export interface CandidatesOptions {
  urls: string[];
  slots: string[] | null;
  json: boolean;
  /** A bearer token for nodes that protect their reads (SLOTSYNC_READ_TOKEN). */
  token: string | undefined;
}

function usage(problem: string): SlotSyncError {
  return new SlotSyncError('SLOTSYNC_CONFIG', `candidates: ${problem}\n${CANDIDATES_USAGE}`);
}

export function parseCandidatesArgs(
  args: readonly string[],
  env: NodeJS.ProcessEnv = {},
): CandidatesOptions {
  const options: CandidatesOptions = {
    urls: [],
    slots: null,
    json: false,
    token: env.SLOTSYNC_READ_TOKEN || env.SLOTSYNC_API_TOKEN || undefined,
  };
  for (let i = 0; i < args.length; i++) {
    const [flag, inline] = (args[i] as string).split(/=(.*)/s, 2) as [string, string | undefined];
    if (flag === '--json') {
      options.json = true;
      continue;
    }
    const value = inline ?? args[++i];
    if (flag !== '--url' && flag !== '--slots') throw usage(`unknown option ${flag}`);
    if (value === undefined) throw usage(`${flag} needs a value`);
    if (flag === '--slots') options.slots = slotList(value);
    else {
      if (!/^https?:\/\/[^/]+/.test(value)) {
        throw usage(`--url needs http(s)://host:port, got "${value}"`);
      }
      options.urls.push(value.replace(/\/+$/, ''));
    }
  }
  if (options.urls.length === 0) throw usage('at least one --url is needed');
  return options;
}

async function ask(url: string, options: CandidatesOptions): Promise<Asked> {
  const query = options.slots ? `?slots=${encodeURIComponent(options.slots.join(','))}` : '';
  try {
    const response = await fetch(`${url}/ready${query}`, {
      signal: AbortSignal.timeout(ASK_TIMEOUT_MS),
      headers: options.token ? { authorization: `Bearer ${options.token}` } : {},
    });
    if (response.status !== 200 && response.status !== 503) {
      return { url, answer: null, error: `GET /ready answered ${response.status}` };
    }
    return { url, answer: (await response.json()) as Safety, error: null };
  } catch (error) {
    return { url, answer: null, error: `did not answer: ${messageOf(error)}` };
  }
}

export async function runCandidates(options: CandidatesOptions): Promise<number> {
  const asked = await Promise.all(options.urls.map((url) => ask(url, options)));
  const ranking = rankCandidates(asked);
  if (options.json) process.stdout.write(`${JSON.stringify(ranking, null, 2)}\n`);
  else process.stdout.write(`${formatRanking(ranking).join('\n')}\n`);
  return ranking.best === null ? 1 : 0;
}
