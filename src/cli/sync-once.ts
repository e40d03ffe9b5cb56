/** `slotsync sync --once`: one cycle, its report as JSON on stdout. */
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { runCycle } from '../engine/cycle.js';
import { createEngine } from '../engine/engine.js';

/** Exit code: 0 when every slot synced, 3 when the cycle ran but some slot failed or conflicts. */
export async function syncOnce(config: Config, logger: Logger): Promise<number> {
  const engine = await createEngine(config, logger);
  try {
    const result = await runCycle(engine.deps);
    process.stdout.write(`${JSON.stringify(result.report, null, 2)}\n`);
    const troubled = result.report.slots.filter(
      (s) => s.action === 'failed' || s.action === 'conflict',
    );
    for (const slot of troubled) {
      process.stderr.write(`slotsync: ${slot.name}: ${slot.action}: ${slot.reason}\n`);
    }
    return troubled.length > 0 ? 3 : 0;
  } finally {
    await engine.close();
  }
}
