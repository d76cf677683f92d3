// Preflight (issue 10 item 3; docs/carrier.md "Before an inject"), with the real CLI against
// terminal modules on TCP: `qkt inject` refuses a carrier that cannot keep the receipt (read-only
// drive, another user's carrier, a full drive) and a damaged batch before the first frame, exit 5,
// naming the carrier and the fix, with the terminal's pool and the carrier unchanged; a mistyped
// path makes no folder and no flash image (`carrier load`, `inject`, `terminal run`); a load the
// carrier has no room for spends nothing and leaves no carrier. Read-only and full drives are
// real tmpfs mounts (root); the other user is nobody (setpriv). Every process is ended by pid.
import t from 'tap';
import type { Test } from 'tap';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readdirSync, readFileSync, rmSync, statfsSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { QKT_BIN } from './cli.js';
import type { CliRun } from './cli.js';
import { background, cliSkipReason, failsWith, qktJson, runQkt } from './e2e-rig.js';
import { asNobody, mountTmpfs, otherUserSkipReason, tmpfsSkipReason } from './tmpfs.js';
import { assertFreshBuild } from './build-check.js';

t.setTimeout(180_000);
const skip = cliSkipReason();
const CARRIER = 5;

interface Loaded {
  carrierId: string;
  carrier: string;
  loaded: Array<{ terminalId: string; batchId: string; seq: number; bits: number }>;
}
interface Status {
  pool: Record<string, unknown>;
}

/** Every file under `dir` (relative path -> sha256 and mode), folders included: "unchanged" means this is equal. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      const mode = (statSync(p).mode & 0o7777).toString(8);
      if (e.isDirectory()) {
        out[`${relative(dir, p)}/`] = mode;
        walk(p);
      } else {
        out[relative(dir, p)] = `${mode} ${createHash('sha256').update(readFileSync(p)).digest('hex')}`;
      }
    }
  };
  walk(dir);
  return out;
}

/** `qkt ...args` as nobody. */
function runAsNobody(args: string[]): Promise<CliRun> {
  assertFreshBuild();
  // A clean environment (env -i): the test runner's NODE_OPTIONS hooks, which it adds to every
  // child it spawns, write into .tap/, which nobody cannot.
  const [cmd, argv] = asNobody('env', ['-i', `PATH=${process.env['PATH'] ?? '/usr/bin:/bin'}`, process.execPath, QKT_BIN, ...args]);
  return new Promise((resolve) => {
    execFile(cmd, argv, { encoding: 'utf8', timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

t.test('preflight: checks before anything is sent', { skip }, async (t) => {
  // A folder nobody can traverse (mkdtemp makes 0700): the other-user case reads through it.
  const dir = mkdtempSync(join(tmpdir(), 'qkt-preflight-'));
  chmodSync(dir, 0o755);
  const mounts: Array<{ unmount(): void }> = [];
  t.teardown(() => {
    for (const m of mounts) m.unmount();
    rmSync(dir, { recursive: true, force: true });
  });
  const home = join(dir, 'kmd');
  const image = (id: string) => join(dir, `${id}.img`);
  await qktJson(t, ['kmd', 'init', '--home', home, '--rate', '1000Mbit/s']);
  const ids = ['T1', 'T2', 'T3', 'T4'];
  for (const id of ids) await qktJson(t, ['kmd', 'enroll', '--home', home, '--terminal', id, '--flash', image(id)]);
  const port: Record<string, string> = {};
  for (const id of ids) port[id] = (await background(t, ['terminal', 'run', '--flash', image(id), '--listen', 'tcp:127.0.0.1:0'])).ready['port'] as string;
  const pool = async (t: Test, id: string) => (await qktJson<Status>(t, ['status', '--port', port[id]!])).pool;
  const taken = () => (JSON.parse(readFileSync(join(home, 'supply.json'), 'utf8')) as { takenBits: number }).takenBits;
  const load = (t: Test, car: string, id: string, bits: string, extra: string[] = []) =>
    qktJson<Loaded>(t, ['carrier', 'load', '--home', home, '--carrier', car, '--terminal', id, '--bits', bits, ...extra]);

  t.test('a mistyped path makes no folder and no image', async (t) => {
    const before = taken();
    const typo = join(dir, 'usb0');
    failsWith(t, await runQkt(['carrier', 'load', '--home', home, '--carrier', typo, '--terminal', 'T4', '--bits', '64kbit']), CARRIER, /^qkt: carrier \S+usb0 does not exist: is the drive mounted\? .*add --init/, 'carrier load into a missing folder');
    t.notOk(existsSync(typo), 'no folder made');
    t.equal(taken(), before, 'nothing exported');
    const p0 = await pool(t, 'T4');
    failsWith(t, await runQkt(['inject', '--carrier', typo, '--port', port['T4']!]), CARRIER, /^qkt: carrier \S+usb0 does not exist: is the drive mounted\?/, 'inject from a missing folder');
    t.notOk(existsSync(typo), 'no folder made by inject');
    const empty = join(dir, 'mountpoint');
    mkdirSync(empty);
    failsWith(t, await runQkt(['inject', '--carrier', empty, '--port', port['T4']!]), CARRIER, /^qkt: \S+mountpoint is not a carrier \(no carrier\.json\): is the drive mounted\?/, 'inject from an empty mount point');
    t.same(readdirSync(empty), [], 'the empty folder stays empty');
    t.same(await pool(t, 'T4'), p0, "the terminal's pool is unchanged");

    const img = join(dir, 'typo.img');
    failsWith(t, await runQkt(['terminal', 'run', '--flash', img, '--listen', 'tcp:127.0.0.1:0']), 6, /^qkt: flash image \S+typo\.img does not exist; .*qkt kmd enroll .*--create-image/, 'terminal run on a missing image');
    t.notOk(existsSync(img), 'no image made');
    t.notOk(existsSync(`${img}.lock`), 'no lock file left beside it');
    t.notOk(existsSync(`${img}.wear`), 'no wear file');
    const blank = await background(t, ['terminal', 'run', '--flash', img, '--create-image', '--listen', 'tcp:127.0.0.1:0']);
    t.match(blank.ready, { event: 'ready', enrolled: false, terminalId: null }, '--create-image starts a blank module');
    t.ok(existsSync(img), 'on a new image');
    await blank.stop();

    // Told to: --init makes the folder; an existing empty folder is loaded without it.
    t.match(await load(t, join(dir, 'new-car'), 'T4', '64kbit', ['--init']), { loaded: [{ terminalId: 'T4', seq: 1 }] });
    t.match(await load(t, empty, 'T4', '64kbit'), { loaded: [{ terminalId: 'T4', seq: 2 }] }, 'an existing empty folder becomes a carrier');
  });

  t.test('a damaged batch is named as damaged, never "wrong carrier", before BEGIN', async (t) => {
    const cut = join(dir, 'c-cut');
    const flip = join(dir, 'c-flip');
    const l1 = await load(t, cut, 'T3', '256kbit', ['--init']);
    const l2 = await load(t, flip, 'T3', '256kbit', ['--init']);
    const file = (car: string, l: Loaded) => join(car, 'batches', `T3-${l.loaded[0]!.batchId}.qkb`);
    truncateSync(file(cut, l1), statSync(file(cut, l1)).size - 100);
    const fd = openSync(file(flip, l2), 'r+');
    writeSync(fd, Buffer.from('XXXX'), 0, 4, 0); // the header's magic
    closeSync(fd);
    const p0 = await pool(t, 'T3');
    for (const [car, l, why] of [[cut, l1, /bytes, but its header says/], [flip, l2, /header does not parse/]] as const) {
      const snap = snapshot(car);
      const b = l.loaded[0]!.batchId.slice(0, 8);
      const r = await runQkt(['inject', '--carrier', car, '--port', port['T3']!]);
      failsWith(t, r, CARRIER, new RegExp(`^qkt: carrier car-[0-9a-f]+: terminal T3's batch ${b} is damaged \\(T3-[0-9a-f]{32}\\.qkb: .+\\); nothing was sent: back at the KMD, void it \\(qkt kmd void --home H --terminal T3 --batch ${b} --reason damaged\\) and load a new one`), `inject of a ${car.endsWith('cut') ? 'cut' : 'changed'} batch`);
      t.match(r.stderr, why, 'says what is wrong with the file');
      t.notMatch(r.stderr, /wrong carrier/);
      t.same(snapshot(car), snap, 'the carrier is unchanged');
    }
    t.same(await pool(t, 'T3'), p0, "the terminal's pool is unchanged (no transfer began)");
  });

  t.test('a read-only carrier is refused before the first frame; the pool and the carrier unchanged', { skip: tmpfsSkipReason() }, async (t) => {
    const ro = mountTmpfs(join(dir, 'ro'), 4096);
    mounts.push(ro);
    // The mount point is an existing empty folder: loaded without --init.
    const l = await load(t, ro.path, 'T1', '1Mbit');
    ro.readOnly(true);
    const snap = snapshot(ro.path);
    const p0 = await pool(t, 'T1');
    const want = new RegExp(`^qkt: carrier ${ro.path} is on a drive mounted read-only, so the terminal's receipt could not be stored; nothing was sent: remount it read-write \\(mount -o remount,rw on its mount point\\)`);
    failsWith(t, await runQkt(['inject', '--carrier', ro.path, '--port', port['T1']!]), CARRIER, want, 'inject from a read-only drive');
    // A port with nothing on it: exit 5, not 3: the carrier was checked before the port was opened.
    failsWith(t, await runQkt(['inject', '--carrier', ro.path, '--port', 'tcp:127.0.0.1:1']), CARRIER, want, 'checked before the port is opened');
    const j = await runQkt(['inject', '--carrier', ro.path, '--port', port['T1']!, '--json']);
    t.equal(j.code, CARRIER);
    t.match(JSON.parse(j.stdout), { error: { exitCode: CARRIER, message: /read-only/ } }, '--json: the error document');
    t.same(await pool(t, 'T1'), p0, "the terminal's pool is unchanged");
    t.same(snapshot(ro.path), snap, 'the carrier is unchanged');
    ro.readOnly(false);
    t.match(await qktJson(t, ['inject', '--carrier', ro.path, '--port', port['T1']!]), { terminalId: 'T1', batchId: l.loaded[0]!.batchId, resumedFromBits: 0 }, 'read-write again: the same batch injects in full');
  });

  t.test('a drive that turns read-only after the preflight, mid-inject: exit 5, the terminal holds the batch, the same inject stores its receipt', { skip: tmpfsSkipReason() }, async (t) => {
    await qktJson(t, ['kmd', 'enroll', '--home', home, '--terminal', 'T5', '--flash', image('T5')]);
    // Paced: 512 kbit take about 5 s, time to turn the drive read-only under the transfer.
    const slow = (await background(t, ['terminal', 'run', '--flash', image('T5'), '--listen', 'tcp:127.0.0.1:0', '--baud', '115200'])).ready['port'] as string;
    const drive = mountTmpfs(join(dir, 'goes-ro'), 4096);
    mounts.push(drive);
    const l = await load(t, drive.path, 'T5', '512kbit');
    const b = l.loaded[0]!.batchId.slice(0, 8);
    const running = runQkt(['inject', '--carrier', drive.path, '--port', slow]);
    await new Promise((r) => setTimeout(r, 1500));
    drive.readOnly(true);
    const r = await running;
    t.equal(r.code, CARRIER, `exit 5: ${r.stderr.trim()}`);
    t.match(r.stderr.trimEnd().split('\n').at(-1), new RegExp(`^qkt: carrier ${drive.path} is on a drive mounted read-only, so the terminal's receipt could not be stored \\(terminal T5 holds batch ${b} in full: the same qkt inject gets its receipt again\\): remount it read-write`));
    t.notMatch(r.stderr, /\.qkr\.tmp-/, 'no temporary file name');
    drive.readOnly(false);
    t.match(await qktJson(t, ['inject', '--carrier', drive.path, '--port', slow]), { terminalId: 'T5', batchId: l.loaded[0]!.batchId, alreadyAccepted: true, receiptStored: true }, 'read-write again: the receipt is stored');
  });

  t.test("another user's carrier is refused before the first frame", { skip: otherUserSkipReason() }, async (t) => {
    const car = join(dir, 'c-root');
    await load(t, car, 'T2', '256kbit', ['--init']);
    const snap = snapshot(car);
    const p0 = await pool(t, 'T2');
    const r = await runAsNobody(['inject', '--carrier', car, '--port', port['T2']!]);
    failsWith(t, r, CARRIER, new RegExp(`^qkt: carrier ${car} is not writable by this user \\(uid 65534\\), so the terminal's receipt could not be stored; nothing was sent: run qkt as the user who owns the carrier`), 'inject as nobody');
    t.same(await pool(t, 'T2'), p0, "the terminal's pool is unchanged");
    t.same(snapshot(car), snap, 'the carrier is unchanged');
  });

  t.test('a full drive: inject and load refused before anything is sent or spent; no carrier left', { skip: tmpfsSkipReason() }, async (t) => {
    const small = mountTmpfs(join(dir, 'small'), 512);
    mounts.push(small);
    await load(t, small.path, 'T2', '64kbit');
    // Fill the drive to 16 KiB short of full (the carrier's lock file takes a page of it): less than a receipt's margin.
    const fs = statfsSync(small.path);
    writeFileSync(join(small.path, 'filler'), Buffer.alloc(Number(fs.bavail) * Number(fs.bsize) - 16 * 1024));
    const snap = snapshot(small.path);
    const p0 = await pool(t, 'T2');
    failsWith(t, await runQkt(['inject', '--carrier', small.path, '--port', port['T2']!]), CARRIER, /^qkt: carrier \S+small has 1?\d\.0 KiB free and needs at least 64\.0 KiB, so the terminal's receipt could not be stored; nothing was sent: free space/, 'inject with no room for the receipt');
    t.same(await pool(t, 'T2'), p0, "the terminal's pool is unchanged");
    t.same(snapshot(small.path), snap, 'the carrier is unchanged');

    // A 1 Mbit load onto an empty 64 KiB drive: refused before the export; the drive stays empty.
    const tiny = mountTmpfs(join(dir, 'tiny'), 64);
    mounts.push(tiny);
    const before = taken();
    failsWith(t, await runQkt(['carrier', 'load', '--home', home, '--carrier', tiny.path, '--terminal', 'T2', '--bits', '1Mbit']), CARRIER, /^qkt: carrier \S+tiny has .* free and needs at least .*, so no batch could be stored on it; nothing was exported/, 'load onto a drive too small');
    t.same(readdirSync(tiny.path), [], 'no carrier left on the drive');
    t.equal(taken(), before, 'nothing exported');
  });
});
