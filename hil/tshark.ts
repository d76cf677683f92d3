// Test support: run Debian's `tshark` with the project's Wireshark dissector
// (docs/wireshark/qkt.lua) on a capture and read chosen fields back, one row per frame.
// A missing tshark skips with a reason, except under CI=true, where CI installs it (.ci/run).
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const DISSECTOR = fileURLToPath(new URL('../docs/wireshark/qkt.lua', import.meta.url));

export function tsharkAvailable(): boolean {
  return spawnSync('tshark', ['--version'], { stdio: 'ignore', timeout: 20_000 }).status === 0;
}

/** For tap's `skip`: a visible reason, or false to run. Under CI=true a missing tshark fails instead. */
export function tsharkSkipReason(): string | false {
  if (process.env['CI'] === 'true' || tsharkAvailable()) return false;
  return 'tshark not installed (apt-get install -y tshark); the Wireshark dissector tests are skipped';
}

/** Run tshark on `pcap` with the dissector loaded; rejects on a non-zero exit or a Lua error. */
export function tshark(pcap: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    // Lua runs as root too on Debian's 4.0 (run_user_scripts_when_superuser = true in its
    // init.lua), as CI runs; docs/wireshark/README.md says what to do where it does not.
    const child = spawn('tshark', ['-n', '-r', pcap, '-X', `lua_script:${DISSECTOR}`, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => {
      // A Lua script that fails to load is only a warning on stderr: make it an error here.
      if (code !== 0 || /lua:\d+:|Lua: Error/i.test(err)) reject(new Error(`tshark exited ${code}: ${err}`));
      else resolve(out);
    });
  });
}

/** The given fields of every frame (`-T fields`), several occurrences joined by `|`. */
export async function tsharkFields(pcap: string, fields: string[]): Promise<Record<string, string>[]> {
  const out = await tshark(pcap, ['-T', 'fields', '-E', 'separator=/t', '-E', 'aggregator=|', ...fields.flatMap((f) => ['-e', f])]);
  return out
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => Object.fromEntries(l.split('\t').map((v, i) => [fields[i]!, v])));
}
