// The field tool as a field engineer runs it: `qkt inject` against terminal modules on virtual
// serial cables (socat pty pairs), checking what it prints and its exit codes (command.ts `Exit`,
// docs/cli.md): success, the --json document, every refusal with its one-line reason, a power
// cut in the middle of an injection and the resumed re-run, `--port auto` with nothing attached,
// and `carrier status` after delivery.
import t from 'tap';
import type { Test } from 'tap';
import { join } from 'node:path';
import { NorFlash } from '../firmware/flash/nor-flash.js';
import { createTerminal } from '../firmware/terminal.js';
import { createInProcessPair } from '../host-tools/transports/inproc.js';
import { LinkClient } from '../host-tools/link/client.js';
import { injectBatch } from '../host-tools/link/inject.js';
import { Carrier } from '../host-tools/carrier/carrier.js';
import type { CliRun } from './cli.js';
import { background, parseJson, ptyPair, ptySkipReason, qktJson, runQkt } from './e2e-rig.js';

const MBIT = 1 << 20;
const Exit = { OK: 0, NO_DEVICE: 3, REFUSED: 4, CARRIER: 5 } as const;

t.setTimeout(150_000);

interface Loaded {
  carrierId: string;
  loaded: Array<{ terminalId: string; batchId: string; seq: number; bits: number }>;
}
interface InjectDoc {
  terminalId: string;
  batchId: string;
  seq: number;
  bits: number;
  seconds: number;
  resumedFromBits: number;
  alreadyAccepted: boolean;
  carrierId: string;
}
interface PoolDoc {
  terminalId: string | null;
  pool: { storedKeyBits: number; batches: Array<{ batchId: string; seq: number; bits: number }>; staging: unknown };
}

/** A failed run: the expected exit code and one line `qkt: reason` on stderr, nothing on stdout. */
function failsWith(t: Test, r: CliRun, code: number, reason: RegExp, what: string): void {
  t.equal(r.code, code, `${what}: exit ${code}`);
  t.equal(r.stdout, '', `${what}: nothing on stdout`);
  const lines = r.stderr.trimEnd().split('\n');
  t.equal(lines.length, 1, `${what}: one line on stderr`);
  t.match(lines[0], /^qkt: /);
  t.match(lines[0], reason, `${what}: says why`);
}

// The three groups below run side by side (jobs: 3): each has its own modules and carriers.
t.test('qkt inject, as the field engineer runs it', { skip: ptySkipReason(), jobs: 3 }, async (t) => {
  const dir = t.testdir({});
  const home = join(dir, 'kmd');
  const other = join(dir, 'other-kmd');
  const flash = (id: string) => join(dir, `${id}.img`);
  const car = (name: string) => join(dir, name);

  // ---- set up: a KMD with four terminals, another KMD that also has a terminal named T1, carriers
  await Promise.all([
    qktJson(t, ['kmd', 'init', '--home', home, '--rate', '1000Mbit/s']),
    qktJson(t, ['kmd', 'init', '--home', other, '--rate', '1000Mbit/s']),
  ]);
  await Promise.all([
    ...['T1', 'T2', 'T3', 'T4'].map((id) => qktJson(t, ['kmd', 'enroll', '--home', home, '--terminal', id, '--flash', flash(id)])),
    qktJson(t, ['kmd', 'enroll', '--home', other, '--terminal', 'T1', '--flash', join(dir, 'foreign-T1.img')]),
  ]);
  const load = (h: string, c: string, ids: string[], bits: string) =>
    qktJson<Loaded>(t, ['carrier', 'load', '--init', '--home', h, '--carrier', car(c), ...ids.flatMap((id) => ['--terminal', id]), '--bits', bits]);
  // Sequential on one KMD home: each load takes the next seq for its terminals.
  const c1 = await load(home, 'c1', ['T1', 'T2'], '1Mbit');
  const cOld = await load(home, 'c-old', ['T3'], '256Kbit'); // T3 seq 1
  const cNew = await load(home, 'c-new', ['T3'], '256Kbit'); // T3 seq 2
  const cRes = await load(home, 'c-resume', ['T4'], '1Mbit');
  const cForeign = await load(other, 'c-foreign', ['T1'], '256Kbit');
  t.match(cOld.loaded, [{ terminalId: 'T3', seq: 1 }]);
  t.match(cNew.loaded, [{ terminalId: 'T3', seq: 2 }]);

  // ---- terminal modules on their cables
  const port: Record<string, string> = {};
  await Promise.all(
    ['T1', 'T2', 'T3'].map(async (id) => {
      const cable = await ptyPair(t);
      const term = await background(t, ['terminal', 'run', '--flash', flash(id), '--port', cable.b]);
      t.match(term.ready, { terminalId: id, enrolled: true });
      port[id] = cable.a;
    }),
  );
  const blankCable = await ptyPair(t);
  const blank = await background(t, ['terminal', 'run', '--flash', join(dir, 'blank.img'), '--create-image', '--port', blankCable.b]);
  t.match(blank.ready, { terminalId: null, enrolled: false });
  const emptyCable = await ptyPair(t); // a cable with nothing on the other end

  const inject = (c: string, p: string, json = false) => runQkt(['inject', '--carrier', car(c), '--port', p, ...(json ? ['--json'] : [])]);
  const status = (t: Test, p: string) => qktJson<PoolDoc>(t, ['status', '--port', p]);

  t.test('on enrolled and blank modules', async (t) => {
    await t.test('success: one line for a person, exit 0', async (t) => {
      const r = await inject('c1', port['T1']!);
      t.equal(r.code, Exit.OK, r.stderr);
      const b = c1.loaded.find((l) => l.terminalId === 'T1')!;
      t.match(r.stdout, new RegExp(`^T1: 1 Mbit injected \\(batch ${b.batchId.slice(0, 8)}, seq 1\\) in \\d+\\.\\d\\d s; receipt stored on the carrier\\n$`));
      t.equal(r.stderr, '', 'no progress noise on stderr when it is not a TTY');
      t.match(await status(t, port['T1']!), { terminalId: 'T1', pool: { storedKeyBits: MBIT, batches: [{ batchId: b.batchId, seq: 1, bits: MBIT }] } });
    });

    await t.test('--json: one document with terminalId, batchId, bits, seconds, resumedFromBits', async (t) => {
      const r = await inject('c1', port['T2']!, true);
      t.equal(r.code, Exit.OK, r.stderr);
      t.equal(r.stdout.trimEnd().split('\n').length, 1, 'one line of JSON');
      const doc = parseJson<InjectDoc>(r);
      const b = c1.loaded.find((l) => l.terminalId === 'T2')!;
      t.match(doc, { terminalId: 'T2', batchId: b.batchId, seq: 1, bits: MBIT, resumedFromBits: 0, alreadyAccepted: false, carrierId: c1.carrierId, receiptStored: true });
      t.type(doc.seconds, 'number');
      t.ok(doc.seconds > 0 && doc.seconds < 30, `seconds is a duration (${doc.seconds})`);
    });

    await t.test('carrier status after delivery', async (t) => {
      const s = await qktJson<{ carrierId: string; batches: unknown[]; delivered: Array<{ terminalId: string; batchId: string; bits: number; collected: boolean }>; receiptsPending: number }>(t, [
        'carrier', 'status', '--carrier', car('c1'),
      ]);
      t.equal(s.carrierId, c1.carrierId);
      t.same(s.batches, [], 'nothing left to deliver');
      for (const id of ['T1', 'T2']) {
        const b = c1.loaded.find((l) => l.terminalId === id)!;
        t.match(s.delivered.find((d) => d.terminalId === id), { batchId: b.batchId, bits: MBIT, collected: false }, `${id}'s batch delivered`);
      }
      t.equal(s.delivered.length, 2);
      t.equal(s.receiptsPending, 2, 'two receipts wait for kmd collect');
      const human = await runQkt(['carrier', 'status', '--carrier', car('c1')]);
      t.equal(human.code, 0, human.stderr);
      t.match(human.stdout, c1.carrierId);
    });

    await t.test('batch already delivered: exit 5', async (t) => {
      // Its receipt is not verified yet: the message names the command that settles it.
      failsWith(t, await inject('c1', port['T1']!), Exit.CARRIER, /already delivered.*T1.*not verified yet \(qkt kmd collect --carrier /, 'second inject');
      const j = await inject('c1', port['T1']!, true);
      t.equal(j.code, Exit.CARRIER);
      t.match(parseJson(j), { error: { message: /already delivered/, exitCode: Exit.CARRIER } }, '--json: the error as a document');
      t.match(await status(t, port['T1']!), { pool: { storedKeyBits: MBIT, batches: [{ seq: 1 }] } }, 'the module is unchanged');
    });

    await t.test('wrong carrier (no batch for this terminal): exit 5', async (t) => {
      failsWith(t, await inject('c1', port['T3']!), Exit.CARRIER, new RegExp(`wrong carrier: ${c1.carrierId} holds no batch for terminal T3`), 'T3 from c1');
    });

    await t.test('terminal refuses a batch sealed by another KMD: exit 4 with its reason', async (t) => {
      failsWith(t, await inject('c-foreign', port['T1']!), Exit.REFUSED, /terminal T1 refused the batch: AUTH_FAILED/, 'foreign batch');
      const st = await status(t, port['T1']!);
      t.equal(st.pool.storedKeyBits, MBIT, 'the pool is as it was');
      t.equal(st.pool.batches.length, 1);
      t.equal(st.pool.staging, null, 'nothing half-staged');
      const foreign = Carrier.open(car('c-foreign'));
      t.ok(foreign.batchFor('T1'), 'the refused batch is still on its carrier, undelivered');
      t.equal(cForeign.loaded[0]?.terminalId, 'T1');
    });

    await t.test('terminal refuses a stale batch: exit 4 with its reason', async (t) => {
      const r = await inject('c-new', port['T3']!, true);
      t.equal(r.code, Exit.OK, r.stderr);
      t.match(parseJson(r), { terminalId: 'T3', seq: 2 });
      failsWith(t, await inject('c-old', port['T3']!), Exit.REFUSED, /terminal T3 refused the batch: STALE_BATCH/, 'seq 1 after seq 2');
      t.match(await status(t, port['T3']!), { pool: { storedKeyBits: 256 * 1024, batches: [{ seq: 2 }] } }, 'only the newer batch');
    });

    await t.test('carrier load --kmd with a carrier not enrolled for the download interface: exit 5', async (t) => {
      // Checked before any port is opened: the message names the command that fixes it.
      const r = await runQkt(['carrier', 'load', '--kmd', emptyCable.a, '--carrier', car('c-old')]);
      failsWith(t, r, Exit.CARRIER, /holds no carrier key: enrol it at the KMD with qkt kmd carrier add --home H --carrier ID --dir /, 'unenrolled carrier');
    });

    await t.test('module not enrolled (blank flash): exit 4', async (t) => {
      failsWith(t, await inject('c1', blankCable.a), Exit.REFUSED, /not enrolled/, 'blank module');
    });

    const ports = await qktJson<{ serial: { ports: Array<{ path: string; vendorId?: string }> } }>(t, ['ports']);
    const usb = ports.serial.ports.filter((p) => p.vendorId !== undefined || /\/tty(USB|ACM)\d+$/.test(p.path));
    const usbAttached = usb.length > 0 && `this machine has USB serial devices attached (${usb.map((p) => p.path).join(', ')})`;
    await t.test('--port auto with no USB serial device: exit 3 and a clear message', { skip: usbAttached }, async (t) => {
      failsWith(t, await inject('c1', 'auto'), Exit.NO_DEVICE, /--port auto: (no serial device attached|cannot list serial ports)/, '--port auto');
    });
  });

  t.test('no terminal on the port: exit 3', async (t) => {
    failsWith(t, await inject('c1', emptyCable.a), Exit.NO_DEVICE, new RegExp(`no terminal answered on ${emptyCable.a}`), 'silent cable');
    failsWith(t, await inject('c1', join(dir, 'no-such-tty')), Exit.NO_DEVICE, /cannot open/, 'no such port');
  });

  t.test('power cut mid-injection, restart on the same flash, re-run resumes', async (t) => {
    // Where to cut: count, in process on a copy of T4's image, the flash operations of boot and
    // of this very injection, and cut halfway through the injection.
    const sealed = (() => {
      const c = Carrier.open(car('c-resume'));
      return c.readBatch(c.batchFor('T4')!);
    })();
    let bootOps: number;
    let injectOps: number;
    {
      const file = NorFlash.open(flash('T4'));
      const mem = NorFlash.fromImage(file.snapshot());
      file.close();
      const [host, device] = createInProcessPair();
      createTerminal({ flash: mem, transport: device });
      bootOps = mem.faults.mutations;
      const client = new LinkClient(host);
      await injectBatch(client, await client.negotiate(), sealed);
      injectOps = mem.faults.mutations - bootOps;
      await client.close();
    }
    const n = bootOps + Math.max(1, Math.floor(injectOps / 2));
    t.comment(`boot: ${bootOps} flash operations, injection: ${injectOps}; cut at ${n}`);

    // First life: the module dies at its nth flash operation; the cable stays plugged in.
    const cable1 = await ptyPair(t);
    const term1 = await background(t, ['terminal', 'run', '--flash', flash('T4'), '--port', cable1.b, '--power-cut-after', String(n)]);
    t.match(term1.ready, { terminalId: 'T4', enrolled: true });
    const t0 = performance.now();
    const cut = await runQkt(['inject', '--carrier', car('c-resume'), '--port', cable1.a], { timeoutMs: 45_000 });
    const took = (performance.now() - t0) / 1000;
    t.equal(await term1.exited, 137, 'the module died as after a power loss');
    t.match(term1.stderr(), /power cut/);
    t.equal(cut.code, Exit.NO_DEVICE, `the interrupted inject ends with exit 3 (after ${took.toFixed(1)} s), it does not hang: ${cut.stderr.trim()}`);
    t.match(cut.stderr, /^qkt: /);
    t.ok(Carrier.open(car('c-resume')).batchFor('T4'), 'the batch is still on the carrier, undelivered');

    // Power back, cable re-plugged: the same flash image, no fault.
    const cable2 = await ptyPair(t);
    const term2 = await background(t, ['terminal', 'run', '--flash', flash('T4'), '--port', cable2.b]);
    t.match(term2.ready, { terminalId: 'T4', enrolled: true });
    const before = await status(t, cable2.a);
    t.match(before.pool, { storedKeyBits: 0, batches: [] }, 'nothing committed before the re-run');
    const r = await inject('c-resume', cable2.a, true);
    t.equal(r.code, Exit.OK, r.stderr);
    const doc = parseJson<InjectDoc>(r);
    t.match(doc, { terminalId: 'T4', batchId: cRes.loaded[0]!.batchId, bits: MBIT, alreadyAccepted: false });
    t.ok(doc.resumedFromBits > 0 && doc.resumedFromBits < MBIT, `resumed from ${doc.resumedFromBits} of ${MBIT} bits`);
    t.match(await status(t, cable2.a), { terminalId: 'T4', pool: { storedKeyBits: MBIT, staging: null, batches: [{ bits: MBIT }] } }, 'whole batch, exactly once');
    t.notOk(Carrier.open(car('c-resume')).batchFor('T4'), 'delivered now');
    const human = await runQkt(['inject', '--carrier', car('c-resume'), '--port', cable2.a]);
    t.equal(human.code, Exit.CARRIER, 'and not again');
  });
});
