// Child process of hil/carrier-drive.test.ts: loads sealed batch files onto a carrier with the
// compiled carrier (plain ESM, no TS loader, so it starts fast enough to be killed 20+ times).
// Usage: node carrier-writer.mjs <carrier module URL> <folder of *.qkb inputs> [<carrier dir>]
// Without the carrier dir it boots, then waits for it as one line on stdin: the parent can start
// the next writer while it checks the last one. Prints "ready" once the carrier is open, then
// "wrote <k> <outcome>" after each batch is durable, then "done".
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const [moduleUrl, inputDir, dirArg] = process.argv.slice(2);
if (!moduleUrl || !inputDir) {
  process.stderr.write('usage: carrier-writer.mjs <carrier module URL> <input dir> [<carrier dir>]\n');
  process.exit(2);
}
const { Carrier } = await import(moduleUrl);
const files = readdirSync(inputDir).filter((f) => f.endsWith('.qkb')).sort();
const inputs = files.map((f) => readFileSync(join(inputDir, f)));

const carrierDir =
  dirArg ??
  (await new Promise((resolve) => {
    let buf = '';
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', (d) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      process.stdin.destroy();
      resolve(buf.slice(0, nl));
    });
    // The parent went away without sending a folder: nothing to do.
    process.stdin.on('end', () => process.exit(0));
  }));

// open() first finishes what a killed run left: the load below is then a plain re-run.
const carrier = Carrier.open(carrierDir);
process.stdout.write('ready\n');
for (const [k, sealed] of inputs.entries()) {
  const r = carrier.addBatch(sealed);
  // Written only after addBatch returned: everything up to batch k is fsynced.
  process.stdout.write(`wrote ${k} ${r.outcome}\n`);
}
process.stdout.write('done\n');
