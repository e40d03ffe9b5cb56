// npm run build: dist/ from src/ alone, made afresh (no file of an older layout left), with
// the command line executable (tsc does not keep the execute bit of a rebuilt file).
import { execFileSync } from 'node:child_process';
import { chmodSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
rmSync('dist', { recursive: true, force: true });
execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.json'], {
  stdio: 'inherit',
});
chmodSync('dist/cli/main.js', 0o755);
