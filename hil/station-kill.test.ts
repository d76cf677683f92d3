// Issue 13, item 2: "still no key used twice after a crash (kill -9 the station mid-load in a
// test and check)". Four terminals send OTP uplinks as fast as the station answers to a real
// `qkt station run` on a SQLite store (group commit); the station is SIGKILLed mid-load and
// started again on the same store. Then every message sent, answered or on its way at the kill,
// is sent again and answered without being opened twice; each is filed in the inbox exactly
// once (what the station committed but had not filed is filed at its start); the traffic goes
// on; and each module's key account equals the station's.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { NorFlash } from '../firmware/flash/nor-flash.js';
import { createTerminal } from '../firmware/terminal.js';
import { Group, KeysCmd, StationCmd, SystemCmd } from '../firmware/link/groups.js';
import { createInProcessPair } from '../host-tools/transports/inproc.js';
import { LinkClient } from '../host-tools/link/client.js';
import { injectBatch } from '../host-tools/link/inject.js';
import { KmdHome } from '../host-tools/kmd/home.js';
import { enrollTerminal } from '../host-tools/kmd/enroll.js';
import { exportBatch, readOutbox } from '../host-tools/kmd/export.js';
import { ensurePki, pkiDir } from '../host-tools/kmd/serve.js';
import { ensureStationServerCert, issueStationClientCert, readClientPems, serverNames } from '../host-tools/station/certs.js';
import { connectStation } from '../host-tools/station/connect.js';
import { openStationStore } from '../host-tools/station/open-store.js';
import { OPENED_KEPT } from '../host-tools/station/sql-store.js';
import { pgSkipReason, tempDatabase } from '../host-tools/test-support/pg.js';
import { startQkt } from './cli.js';
import type { Background } from './cli.js';

t.setTimeout(120_000);

const IDS = ['T1', 'T2', 'T3', 'T4'];

for (const kind of ['sqlite', 'postgres'] as const) t.test(`the station killed (SIGKILL) mid-load on its ${kind} store: no message opened twice, no key used twice`, { skip: kind === 'postgres' ? pgSkipReason() : false }, async (t) => {
  const dir = t.testdir({});
  const db = kind === 'postgres' ? tempDatabase() : undefined;
  if (db) t.teardown(() => db.drop());
  const home = KmdHome.init(join(dir, 'kmd'), { rateBitsPerSecond: 11_000, stockBits: 2 ** 22, stationStore: kind, ...(db ? { stationDb: db.url } : {}) });
  await home.locked(async () => {
    await ensurePki(home);
    ensureStationServerCert(pkiDir(home), serverNames('127.0.0.1'));
  });
  const terminals: Array<{ id: string; module: LinkClient; pems: ReturnType<typeof readClientPems> }> = [];
  for (const id of IDS) {
    enrollTerminal(home, id, join(dir, `${id}.img`));
    const e = exportBatch(home, id, 2 ** 19);
    const flash = NorFlash.fromImage(readFileSync(join(dir, `${id}.img`)));
    const [host, device] = createInProcessPair();
    createTerminal({ flash, transport: device });
    const module = new LinkClient(host);
    t.teardown(() => module.close());
    await injectBatch(module, await module.negotiate(), readOutbox(e));
    await issueStationClientCert(pkiDir(home), { kind: 'terminal', id, generation: 1 }, join(dir, `cert-${id}`));
    terminals.push({ id, module, pems: readClientPems(join(dir, `cert-${id}`)) });
  }
  const run = async (): Promise<Background> => {
    const st = await startQkt(['station', 'run', '--home', home.dir, '--listen', '127.0.0.1:0']);
    t.teardown(() => st.stop());
    return st;
  };
  const connect = async (address: string) =>
    Promise.all(
      terminals.map(async (x) => {
        const c = new LinkClient(await connectStation(address, x.pems), { baseTimeoutMs: 10_000, retries: 0 });
        await c.negotiate();
        return c;
      }),
    );

  let st = await run();
  let stations = await connect(st.ready['listen'] as string);
  const sessions = await Promise.all(terminals.map(async (x) => (await x.module.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'otp', enc: 'any', auth: 'any' }))['s'] as number));
  const seal = async (i: number, n: number) => (await terminals[i]!.module.request(Group.KEYS, KeysCmd.SEAL, { s: sessions[i]!, d: new Uint8Array(48).fill(n & 0xff) }))['m'] as Uint8Array;

  // 1. Load: each terminal seals and sends, one after the other, until the station dies.
  const answered: Array<{ i: number; m: Uint8Array }> = [];
  const inFlight: Array<{ i: number; m: Uint8Array }> = [];
  let total = 0;
  let killed = false;
  await Promise.all(
    terminals.map(async (_x, i) => {
      for (let n = 0; ; n++) {
        const m = await seal(i, n);
        try {
          await stations[i]!.request(Group.STATION, StationCmd.UPLINK, { t: IDS[i], m });
          answered.push({ i, m });
          if (++total === 200 && !killed) {
            killed = true;
            process.kill(st.child.pid!, 'SIGKILL');
          }
        } catch {
          inFlight.push({ i, m }); // sent, no answer: the station died under it
          return;
        }
      }
    }),
  );
  t.equal(await st.exited, 'SIGKILL', 'the station was killed mid-load');
  t.ok(answered.length >= 200, `${answered.length} uplinks answered before the kill, ${inFlight.length} on their way`);
  await Promise.all(stations.map((c) => c.close().catch(() => undefined)));

  // 2. Started again on the same store.
  st = await run();
  stations = await connect(st.ready['listen'] as string);
  const send = async (x: { i: number; m: Uint8Array }) => {
    try {
      await stations[x.i]!.request(Group.STATION, StationCmd.UPLINK, { t: IDS[x.i], m: x.m });
      return true;
    } catch {
      return false;
    }
  };
  // Every uplink sent again: the station answers each as it did (or would have) and opens none
  // again; what it had committed without answering was filed at its start.
  // A terminal retries its last few (its window): the store knows its last OPENED_KEPT; older
  // ones are refused as replays (their keys are used). Neither kind is opened again.
  const recent = new Set<{ i: number; m: Uint8Array }>();
  // (Its last OPENED_KEPT opened: the message on its way may be one of them.)
  for (let i = 0; i < terminals.length; i++) for (const x of answered.filter((a) => a.i === i).slice(-(OPENED_KEPT - 1))) recent.add(x);
  const older = answered.filter((x) => !recent.has(x));
  const retried = await Promise.all([...recent, ...inFlight].map(send));
  t.equal(retried.filter((x) => !x).length, 0, `the last ${OPENED_KEPT - 1} per terminal and those on their way, sent again: answered as retries`);
  t.ok((await Promise.all(inFlight.map(send))).every((x) => x), 'and again');
  const olderOpened = (await Promise.all(older.map(send))).filter((x) => x).length;
  t.ok(olderOpened <= terminals.length, `${older.length} older ones sent again: refused as replays (${olderOpened} still remembered)`);

  // 3. The traffic goes on, and the accounts agree.
  for (let i = 0; i < terminals.length; i++) t.ok(await send({ i, m: await seal(i, 999) }), `${IDS[i]}: the next message opens`);
  const consumed = await Promise.all(terminals.map(async (x) => ((await x.module.request(Group.SYSTEM, SystemCmd.STATUS, {}))['pool'] as { consumedKeyBits: number }).consumedKeyBits));
  await Promise.all(stations.map((c) => c.close()));
  await st.stop();
  const store = openStationStore(home.path('station'));
  t.teardown(() => store.close());
  t.equal(store.kind, kind);
  for (const [i, id] of IDS.entries()) t.equal(store.account(id).consumedKeyBits, consumed[i], `${id}: the module and the station used the same key bits`);

  // Every message filed exactly once: the inbox names each (terminal, counter) once, and every
  // message the terminals sent (answered, on its way at the kill, and one after) is there.
  const lines = readFileSync(home.path('station', 'inbox.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { id: number; terminal: string; counter: number });
  const keys = new Set(lines.map((l) => `${l.terminal}/${l.counter}`));
  t.equal(keys.size, lines.length, `${lines.length} messages filed, none twice`);
  t.equal(lines.length, answered.length + inFlight.length + terminals.length, 'every message sent was filed: opened exactly once');
  t.ok(lines.every((l, i) => i === 0 || l.id > lines[i - 1]!.id), 'in id order');
});
