// Every protocol request and refusal code has words for a field engineer; the message of a link
// timeout names the request, the peer and the attempts; a reply with a number past 2^53 is refused.
import t from 'tap';
import { Rc } from '../../firmware/link/errors.js';
import * as groups from '../../firmware/link/groups.js';
import { commandId, describeRefusal, groupId, noAnswerMessage, peerName, refusalWords, requestName } from './names.js';
import { bigIntField, checkReply } from './reply-check.js';

t.test('every refusal code has its own sentence', async (t) => {
  const seen = new Set<string>();
  for (const [name, rc] of Object.entries(Rc)) {
    if (rc === Rc.OK) continue;
    const w = refusalWords(rc);
    t.notMatch(w, /code \d+/, `${name} has words`);
    t.notOk(seen.has(w), `${name}: its own words`);
    seen.add(w);
    t.match(describeRefusal(rc), new RegExp(`\\(${name}\\)$`), `${name}: the raw code after`);
  }
});

t.test('every command of every group has a name', async (t) => {
  const tables: Array<[number, Record<string, number>]> = [
    [groups.Group.SYSTEM, groups.SystemCmd],
    [groups.Group.DIAG, groups.DiagCmd],
    [groups.Group.INJECT, groups.InjectCmd],
    [groups.Group.KEYS, groups.KeysCmd],
    [groups.Group.ADMIN, groups.AdminCmd],
    [groups.Group.DOWNLOAD, groups.DownloadCmd],
    [groups.Group.STATION, groups.StationCmd],
  ];
  t.equal(tables.length, Object.keys(groups.Group).length, 'every group');
  for (const [g, cmds] of tables) {
    for (const [name, c] of Object.entries(cmds)) t.notMatch(requestName(g, c), /^the request \(/, `group ${g} ${name}`);
  }
  t.equal(requestName(9, 9), 'the request (group 9 command 9)');
  t.equal(peerName(groups.Group.DOWNLOAD), 'the KMD');
  t.equal(noAnswerMessage(groups.Group.INJECT, groups.InjectCmd.CHUNK, 1560, 3), 'the terminal did not answer the inject chunk request (group 2 command 1) after 3 attempts, 1.6 s each');
});

t.test('a reply holding a number past 2^53 is refused, naming the field', async (t) => {
  t.equal(bigIntField({ a: 1, b: [1, 2, { c: 2n ** 60n }] }), 'b[2].c');
  t.equal(bigIntField({ a: 1, d: new Uint8Array(4) }), undefined);
  const cyc: Record<string, unknown> = { x: 1 };
  cyc['self'] = cyc;
  t.equal(bigIntField(cyc), undefined, 'a cycle ends');
  const e = checkReply(groups.Group.SYSTEM, groups.SystemCmd.STATUS, { pool: { 'stored\u001bKeyBits': 2n ** 64n - 1n } });
  t.match(e, { name: 'PeerDataError', message: 'the terminal sent an out-of-range number in its answer to the status request (group 0 command 1), field pool.stored?KeyBits; it is not a genuine qkt device or it is damaged' });
  t.equal(checkReply(0, 1, { pool: { storedKeyBits: Number.MAX_SAFE_INTEGER } }), undefined);
});

t.test('groupId and commandId give back the names of groups.ts; unknown ids are their numbers', async (t) => {
  t.equal(groupId(groups.Group.INJECT), 'INJECT');
  t.equal(commandId(groups.Group.INJECT, groups.InjectCmd.CHUNK), 'CHUNK');
  t.equal(commandId(groups.Group.DOWNLOAD, groups.DownloadCmd.TAKEN), 'TAKEN');
  t.equal(commandId(groups.Group.SYSTEM, groups.SystemEvent.LOW_WATERMARK, true), 'LOW_WATERMARK');
  t.equal(commandId(groups.Group.SYSTEM, 2, true), '2', 'no such event');
  t.equal(groupId(9), '9');
  t.equal(commandId(9, 7), '7');
  t.equal(commandId(groups.Group.ADMIN, 200), '200');
  for (const [g, name] of Object.entries(groups.Group)) t.equal(groupId(name), g);
});
