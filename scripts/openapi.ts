/** npm run openapi: writes openapi/openapi.json from the app's routes. */
import { writeFile } from 'node:fs/promises';
import { generateOpenApi } from '../src/service/openapi.js';

const target = new URL('../openapi/openapi.json', import.meta.url);
await writeFile(target, await generateOpenApi());
process.stdout.write(`wrote ${target.pathname}\n`);
