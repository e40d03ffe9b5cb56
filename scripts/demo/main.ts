/** npm run demo [-- --pg 18] [--failover-after SECONDS] [--exit-after SECONDS] [--port N] */
import { runDemo } from './demo.js';

await runDemo(process.argv.slice(2));
