// The paper's offline chain end to end, all through the `qkt` CLI as a user runs it, on real
// virtual serial cables (socat pty pairs): a KMD with three enrolled terminals and an enrolled
// carrier; the KMD's download interface on one cable loads the carrier with 3 Mbit per terminal;
// three terminal modules, each on its own cable, take their batch from the carrier; the receipts
// go back to the KMD. Then every terminal holds 3 Mbit and the master station holds exactly the
// same keys under the same key ids, byte for byte, active; the KMD marked every batch delivered.
import t from 'tap';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { NorFlash } from '../firmware/flash/nor-flash.js';
import { KeyPool } from '../firmware/keypool/key-pool.js';
import { POOL_OPTIONS } from '../firmware/secure/enroll.js';
import { poolBatchId } from '../firmware/commands/inject.js';
import { StationStore } from '../host-tools/station/store.js';
import { KmdHome } from '../host-tools/kmd/home.js';
import type { Background } from './cli.js';
import { background, ptyPair, ptySkipReason, qktJson } from './e2e-rig.js';
import { runQkt } from './cli.js';

const MBIT = 1 << 20;
const BITS = 3 * MBIT;
const TERMINALS = ['T1', 'T2', 'T3'] as const;
const CHUNK = 4096; // bytes per key taken from each pool when comparing

t.setTimeout(120_000);

t.test('KMD -> carrier (download interface) -> 3 terminals -> receipts; station keys match', { skip: ptySkipReason() }, async (t) => {
  const dir = t.testdir({});
  const home = join(dir, 'kmd');
  const carrierDir = join(dir, 'carrier');
  const flash = (id: string) => join(dir, `${id}.img`);

  // ---- KMD: init, factory enrolment of three terminals, a carrier for the download interface
  const init = await qktJson<{ kmdId: string }>(t, ['kmd', 'init', '--home', home, '--rate', '1000Mbit/s']);
  t.match(init, { kmdId: /^kmd-/, rateBitsPerSecond: 1e9 });
  // Three factory enrolments (independent of one another: run side by side).
  const enrolled = await Promise.all(TERMINALS.map((id) => qktJson(t, ['kmd', 'enroll', '--home', home, '--terminal', id, '--flash', flash(id)])));
  TERMINALS.forEach((id, i) => t.match(enrolled[i], { terminalId: id, flash: flash(id) }));
  // A carrier folder that is not there (an unmounted drive, a typo) is refused; --init makes it.
  const missing = await runQkt(['kmd', 'carrier', 'add', '--home', home, '--carrier', 'car1', '--dir', carrierDir]);
  t.equal(missing.code, 5, 'kmd carrier add into a missing folder: exit 5');
  t.match(missing.stderr, /carrier .* does not exist: is the drive mounted\? .*add --init/);
  t.notOk(existsSync(carrierDir), 'and no folder was made');
  t.match(await qktJson(t, ['kmd', 'carrier', 'add', '--home', home, '--carrier', 'car1', '--dir', carrierDir, '--init']), { carrierId: 'car1' });

  // ---- the KMD's download interface on a serial cable; the carrier station loads through it
  const kmdCable = await ptyPair(t);
  const serve = await background(t, ['kmd', 'serve', '--home', home, '--listen', '127.0.0.1:0', '--download', kmdCable.b]);
  t.match(serve.ready, { event: 'ready', kmdId: init.kmdId, etsi014: /^https:\/\/127\.0\.0\.1:\d+$/, download: kmdCable.b });
  const load = await qktJson<{ carrierId: string; loaded: Array<{ terminalId: string; batchId: string; seq: number; bits: number; outcome: string }> }>(t, [
    'carrier', 'load', '--kmd', kmdCable.a, '--carrier', carrierDir, '--terminal', 'T1', '--terminal', 'T2', '--terminal', 'T3', '--bits', '3Mbit',
  ]);
  t.equal(load.carrierId, 'car1');
  t.same(load.loaded.map((l) => l.terminalId).sort(), [...TERMINALS]);
  for (const l of load.loaded) t.match(l, { batchId: /^[0-9a-f]{32}$/, seq: 1, bits: BITS, outcome: 'added' });
  const onCarrier = await qktJson<{ batches: Array<{ terminalId: string; batchId: string }> }>(t, ['carrier', 'status', '--carrier', carrierDir]);
  t.same(onCarrier.batches.map((b) => b.terminalId).sort(), [...TERMINALS], 'the carrier holds one batch per terminal');
  t.equal(await serve.stop(), 0, 'kmd serve stops cleanly on SIGTERM');

  // ---- three terminal modules, each on its own cable; the field engineer injects one by one
  const terms = new Map<string, { term: Background; port: string }>();
  await Promise.all(
    TERMINALS.map(async (id) => {
      const cable = await ptyPair(t);
      const term = await background(t, ['terminal', 'run', '--flash', flash(id), '--port', cable.b]);
      t.match(term.ready, { event: 'ready', terminalId: id, enrolled: true, port: cable.b });
      terms.set(id, { term, port: cable.a });
    }),
  );
  for (const id of TERMINALS) {
    const r = await qktJson(t, ['inject', '--carrier', carrierDir, '--port', terms.get(id)!.port]);
    const l = load.loaded.find((x) => x.terminalId === id)!;
    t.match(r, { terminalId: id, batchId: l.batchId, seq: 1, bits: BITS, resumedFromBits: 0, alreadyAccepted: false, carrierId: 'car1', receiptStored: true }, `${id} injected`);
  }

  // ---- the carrier holds the receipts and, until the KMD has verified them, the ciphertext
  type CarrierSt = { delivered: Array<{ terminalId: string; state: string; ciphertextBytes: number }>; batches: unknown[]; receiptsPending: number; sealedBytes: number };
  const held = await qktJson<CarrierSt>(t, ['carrier', 'status', '--carrier', carrierDir]);
  t.match(held, { batches: [], receiptsPending: 3 });
  t.same(held.delivered.map((d) => [d.terminalId, d.state]), TERMINALS.map((id) => [id, 'unverified']), 'delivered, unverified');
  t.ok(held.delivered.every((d) => d.ciphertextBytes > BITS / 8), 'ciphertext kept until collect');

  // ---- receipts back to the KMD: the station's keys become active
  const collect = await qktJson<{ collected: Array<{ terminalId: string }>; rejected: unknown[]; activatedBits: number }>(t, ['kmd', 'collect', '--home', home, '--carrier', carrierDir]);
  t.same(collect.collected.map((c) => c.terminalId).sort(), [...TERMINALS]);
  t.same(collect.rejected, []);
  t.equal(collect.activatedBits, 3 * BITS);
  const after = await qktJson<CarrierSt>(t, ['carrier', 'status', '--carrier', carrierDir]);
  t.match(after, { receiptsPending: 0, sealedBytes: 0 }, 'collected: the carrier holds no ciphertext');
  t.ok(after.delivered.every((d) => d.state === 'collected' && d.ciphertextBytes === 0));

  // ---- what each terminal says about itself over its cable
  const statuses = await Promise.all(TERMINALS.map((id) => qktJson<{ pool: { storedKeyBits: number } }>(t, ['status', '--port', terms.get(id)!.port])));
  TERMINALS.forEach((id, i) => {
    const st = statuses[i]!;
    t.match(st, { terminalId: id, enrolled: true, pool: { storedKeyBits: BITS, consumedKeyBits: 0, batches: [{ seq: 1, bits: BITS }] } }, `${id}: qkt status`);
    t.equal(st.pool.storedKeyBits, 3_145_728, `${id}: pool.storedKeyBits = 3145728`);
  });
  for (const { term } of terms.values()) t.equal(await term.stop(), 0, 'terminal stops cleanly');

  // ---- the KMD's records: every batch on the carrier and delivered
  const kmd = KmdHome.open(home);
  for (const id of TERMINALS) {
    const rec = kmd.terminal(id);
    t.equal(rec.batches.length, 1, `${id}: one batch exported`);
    for (const b of rec.batches) t.match(b, { carrierId: 'car1', deliveredAt: String, bits: BITS }, `${id}: batch ${b.batchId.slice(0, 8)} delivered`);
  }

  // ---- the station holds exactly the keys each terminal holds
  const station = new StationStore(kmd.path('station'));
  t.teardown(() => station.close());
  t.same(station.terminals(), [...TERMINALS]);
  for (const id of TERMINALS) {
    const state = station.state(id);
    const stationBatches = Object.values(state.batches);
    t.equal(stationBatches.length, 1, `${id}: one station batch`);
    for (const b of stationBatches) t.match(b, { active: true, activatedBy: 'receipt', bits: BITS }, `${id}: station batch active`);
    const st = station.status(id);
    t.same(st.inactive, [], `${id}: no inactive station batch`);

    const img = NorFlash.open(flash(id));
    t.teardown(() => img.close());
    const termPool = KeyPool.mount(img, POOL_OPTIONS);
    const stPool = station.pool(id);
    const tb = termPool.status().batches;
    const sb = stPool.status().batches;
    t.same(
      tb.map((b) => ({ batchId: b.batchId, seq: b.seq, bits: b.bits, firstKeyOffset: b.firstKeyOffset })),
      sb.map((b) => ({ batchId: b.batchId, seq: b.seq, bits: b.bits, firstKeyOffset: b.firstKeyOffset })),
      `${id}: same batches (ids, seq, size) in the module and at the station`,
    );
    t.equal(termPool.status().storedKeyBits, BITS);
    t.equal(stPool.status().storedKeyBits, BITS);
    const kmdBatch = kmd.terminal(id).batches[0]!;
    t.equal(tb[0]?.batchId, poolBatchId(Buffer.from(kmdBatch.batchId, 'hex')), `${id}: pool batch id derives from the KMD's batch id`);

    let compared = 0;
    let mismatches = 0;
    let blank = 0;
    for (const b of tb) {
      for (let off = 0; off < b.bits / 8; off += CHUNK) {
        const n = Math.min(CHUNK, b.bits / 8 - off);
        const keyId = { batchId: b.batchId, bitOffset: b.firstKeyOffset + off * 8 };
        const k1 = termPool.consumeById(keyId, n);
        const k2 = stPool.consumeById(keyId, n);
        if (k1.skippedBits !== 0 || k2.skippedBits !== 0 || !Buffer.from(k1.key).equals(Buffer.from(k2.key))) mismatches++;
        if (k1.key.every((x) => x === 0) || k1.key.every((x) => x === 0xff)) blank++;
        compared += n * 8;
      }
    }
    t.equal(mismatches, 0, `${id}: every key byte-equal in the module and at the station`);
    t.equal(blank, 0, `${id}: no all-zero or erased key chunk (real key material)`);
    t.equal(compared, BITS, `${id}: all ${BITS} bits compared`);
    t.equal(termPool.status().storedKeyBits, 0, `${id}: module pool drained`);
    t.equal(stPool.status().storedKeyBits, 0, `${id}: station pool drained`);
  }
});
