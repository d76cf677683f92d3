// Child process of hil/carrier-drive.test.ts: loads sealed batch files onto a carrier with the
// compiled carrier (plain ESM, no TS loader, so it starts fast enough to be killed 20+ times).
// Usage: node carrier-writer.mjs <carrier module URL> <carrier dir> <folder of *.qkb inputs>
// Prints "ready", then "wrote <k> <outcome>" after each batch is durable, then "done".
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const [moduleUrl, carrierDir, inputDir] = process.argv.slice(2);
if (!moduleUrl || !carrierDir || !inputDir) {
  process.stderr.write('usage: carrier-writer.mjs <carrier module URL> <carrier dir> <input dir>\n');
  process.exit(2);
}
const { Carrier } = await import(moduleUrl);
const files = readdirSync(inputDir).filter((f) => f.endsWith('.qkb')).sort();
const inputs = files.map((f) => readFileSync(join(inputDir, f)));
// open() first finishes what a killed run left: the load below is then a plain re-run.
const carrier = Carrier.open(carrierDir);
process.stdout.write('ready\n');
for (const [k, sealed] of inputs.entries()) {
  const r = carrier.addBatch(sealed);
  // Written only after addBatch returned: everything up to batch k is fsynced.
  process.stdout.write(`wrote ${k} ${r.outcome}\n`);
}
process.stdout.write('done\n');
