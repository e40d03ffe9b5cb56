/** Command-line options of the demo and the benchmark, also as `npm run x --name value`. */
export function option(argv: readonly string[], name: string): string | undefined {
  const index = argv.indexOf(`--${name}`);
  if (index >= 0) return argv[index + 1];
  const inline = argv.find((a) => a.startsWith(`--${name}=`));
  if (inline) return inline.slice(name.length + 3);
  // `npm run demo --failover-after 20` hands the flag to npm, which sets
  // npm_config_failover_after and passes the value on as a bare argument.
  const fromNpm = process.env[`npm_config_${name.replace(/-/g, '_')}`];
  if (fromNpm === undefined || fromNpm === '') return undefined;
  if (fromNpm !== 'true') return fromNpm;
  return argv.find((a) => !a.startsWith('-')) ?? 'true';
}

export function numberOption(argv: readonly string[], name: string): number | undefined {
  const value = option(argv, name);
  if (value === undefined) return undefined;
  const parsed = Number(value);
  if (!Number.isFinite(parsed) || parsed < 0)
    throw new Error(`--${name} needs a number, got "${value}"`);
  return parsed;
}
