// The station's inbox on a SQL store, when the inbox cannot be written: the uplinks are still
// the station's (committed with their lines) and answered; their lines wait in the store and are
// filed, in id order, once the inbox can be written again. And at start, rows the store holds as
// not yet filed are filed unless the inbox already has their ids: a gap left by a failed write
// is filed, a line already there is not filed twice, and a forged id at the inbox's end hides
// nothing (an outside review found both).
import t from 'tap';
import type { Test } from 'tap';
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync, appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { NorFlash } from '../firmware/flash/nor-flash.js';
import { createTerminal } from '../firmware/terminal.js';
import { Group, KeysCmd, StationCmd } from '../firmware/link/groups.js';
import { createInProcessPair } from '../host-tools/transports/inproc.js';
import { LinkClient } from '../host-tools/link/client.js';
import { injectBatch } from '../host-tools/link/inject.js';
import { KmdHome } from '../host-tools/kmd/home.js';
import { enrollTerminal } from '../host-tools/kmd/enroll.js';
import { exportBatch, readOutbox } from '../host-tools/kmd/export.js';
import { ensurePki, pkiDir } from '../host-tools/kmd/serve.js';
import { ensureStationServerCert, issueStationClientCert, readClientPems, serverNames } from '../host-tools/station/certs.js';
import { connectStation } from '../host-tools/station/connect.js';
import { startStationServer } from '../host-tools/station/serve.js';
import type { StationServer } from '../host-tools/station/serve.js';
import { SqlStationStore } from '../host-tools/station/sql-store.js';

t.setTimeout(120_000);

async function rig(t: Test) {
  const dir = t.testdir({});
  const home = KmdHome.init(join(dir, 'kmd'), { rateBitsPerSecond: 11_000, stockBits: 2 ** 21, stationStore: 'sqlite' });
  const cert = await home.locked(async () => {
    await ensurePki(home);
    return ensureStationServerCert(pkiDir(home), serverNames('127.0.0.1'));
  });
  enrollTerminal(home, 'T1', join(dir, 'T1.img'));
  const e = exportBatch(home, 'T1', 2 ** 19);
  const flash = NorFlash.fromImage(readFileSync(join(dir, 'T1.img')));
  const [host, device] = createInProcessPair();
  createTerminal({ flash, transport: device });
  const module = new LinkClient(host);
  t.teardown(() => module.close());
  await injectBatch(module, await module.negotiate(), readOutbox(e));
  await issueStationClientCert(pkiDir(home), { kind: 'terminal', id: 'T1', generation: 1 }, join(dir, 'cert'));
  const pems = readClientPems(join(dir, 'cert'));
  const s = (await module.request(Group.KEYS, KeysCmd.NEGOTIATE, { mode: 'otp', enc: 'any', auth: 'any' }))['s'] as number;
  let n = 0;
  const seal = async () => (await module.request(Group.KEYS, KeysCmd.SEAL, { s, d: new Uint8Array(20).fill(++n) }))['m'] as Uint8Array;
  const start = async () => {
    const server = await startStationServer({ stationDir: home.path('station'), listen: 'tls:127.0.0.1:0', tls: cert.pems });
    const station = new LinkClient(await connectStation(server.address, pems), { baseTimeoutMs: 10_000, retries: 0 });
    await station.negotiate();
    return { server, station };
  };
  const inbox = home.path('station', 'inbox.jsonl');
  const ids = (f = inbox) =>
    readFileSync(f, 'utf8')
      .trim()
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => (JSON.parse(l) as { id: number }).id);
  return { home, seal, start, inbox, ids };
}

t.test('an inbox that cannot be written: uplinks answered, lines kept and filed in order once it can', async (t) => {
  const r = await rig(t);
  const { server, station } = await r.start();
  const up = async () => (await station.request(Group.STATION, StationCmd.UPLINK, { t: 'T1', m: await r.seal() }))['n'];
  for (let i = 0; i < 3; i++) t.equal(await up(), 20);
  t.same(r.ids(), [1, 2, 3]);
  // A reader takes the inbox away and a folder stands in its place for a while.
  renameSync(r.inbox, `${r.inbox}.taken`);
  mkdirSync(r.inbox);
  for (let i = 0; i < 4; i++) t.equal(await up(), 20, 'answered: the uplink is the station\'s, its line kept in the store');
  rmSync(r.inbox, { recursive: true });
  t.equal(await up(), 20, 'and one more, after the way is clear again');
  await new Promise((res) => setTimeout(res, 2500)); // the filing timer runs each second
  t.same(r.ids(), [4, 5, 6, 7, 8], 'the kept lines filed, in id order, none lost, none twice');
  await station.close();
  await server.close();
  const again = await r.start();
  t.teardown(async () => {
    await again.station.close();
    await again.server.close();
  });
  t.same(r.ids(), [4, 5, 6, 7, 8], 'a restart files nothing twice');
});

t.test('at start: a gap below the inbox\'s last id is filed, a line already there is not, a forged id hides nothing', async (t) => {
  const r = await rig(t);
  // Three opened uplinks whose lines the store holds as not filed (as after a crash), and an
  // inbox that has the first and third, then a forged line with a large id.
  const store = new SqlStationStore(r.home.path('station'));
  const digest = (k: number) => new Uint8Array(32).fill(k);
  const line = (k: number) => JSON.stringify({ at: '2026-12-01T00:00:00.000Z', terminal: 'T1', mode: 'otp', counter: k, bytes: 1, data: 'AA==' });
  for (const k of [1, 2, 3]) store.recordOpened!('T1', digest(k), line(k), 1, 8);
  store.close();
  writeFileSync(r.inbox, `{"id":1,${line(1).slice(1)}\n{"id":3,${line(3).slice(1)}\n`);
  appendFileSync(r.inbox, `{"id":999999,${line(9).slice(1)}\n`);
  const { server, station } = await r.start();
  t.teardown(async () => {
    await station.close();
    await server.close();
  });
  t.same(r.ids(), [1, 3, 999999, 2], 'the gap (2) filed, 1 and 3 not again, whatever the last line says');
  const s2 = new SqlStationStore(r.home.path('station'));
  t.teardown(() => s2.close());
  t.same(s2.unfiled!(), [], 'nothing left unfiled');
});
