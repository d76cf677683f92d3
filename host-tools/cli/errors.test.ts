// describeError maps each failure by its cause (docs/cli.md "Exit codes"): typed domain errors by
// their type and code, system errors by their errno (with the path), and a TypeError/RangeError
// nobody meant for the user as an internal error (exit 1), never as a usage error.
import t from 'tap';
import { describeError } from './errors.js';
import { CliError, Exit } from './command.js';
import { UsageError } from './argv.js';
import { LinkError, Rc } from '../../firmware/link/errors.js';
import { DeviceBusyError, LinkClosedError, LinkTimeoutError, NoDeviceError, PeerDataError } from '../link/errors.js';
import { InputError } from '../input-error.js';
import { CarrierError } from '../carrier/errors.js';
import { DamagedFileError } from '../json-file.js';
import { KmdError } from '../kmd/home.js';
import { DownloadError } from '../kmd/download-error.js';
import { TerminalHostError } from '../terminal-host-error.js';
import { LockBusyError } from '../lock.js';
import { Group, InjectCmd } from '../../firmware/link/groups.js';
import { parseBits } from '../units.js';
import { parseTcpAddress } from '../transports/tcp.js';

const sysError = (code: string, path?: string, message = `${code}: failed`) => Object.assign(new Error(message), { code, ...(path ? { path } : {}) });

t.test('bugs are exit 1 "internal error" with a request to report; user values are usage', async (t) => {
  for (const e of [new TypeError("Cannot read properties of undefined (reading 'storedKeyBits')"), new RangeError('offset out of range'), new ReferenceError('x is not defined')]) {
    const d = describeError(e);
    t.equal(d.exitCode, Exit.FAILURE, `${e.name}: exit 1, not 2`);
    t.match(d.message, /^internal error: \w+Error: .*please report it/);
  }
  t.same(describeError(new InputError('address must look like tcp:HOST:PORT')), { message: 'address must look like tcp:HOST:PORT', exitCode: Exit.USAGE });
  t.equal(describeError(new UsageError('unknown option --x')).exitCode, Exit.USAGE);
  // The libraries' own validation of user values is InputError, so usage:
  t.equal(describeError(t.throws(() => parseBits('-1')) as unknown).exitCode, Exit.USAGE);
  let err: unknown;
  try {
    parseTcpAddress('tcp:nope');
  } catch (e) {
    err = e;
  }
  t.equal(describeError(err).exitCode, Exit.USAGE, 'a malformed tcp: address');
  t.same(describeError(new CliError('x', Exit.CARRIER)), { message: 'x', exitCode: Exit.CARRIER });
});

t.test('system errors by errno: EACCES is permission (1), not "no device"; ENOENT is state (6) with the path', async (t) => {
  const enoent = describeError(sysError('ENOENT', '/h/kmd/config.json'));
  t.same(enoent, { message: '/h/kmd/config.json: no such file or folder (check the path)', exitCode: Exit.STATE });
  const eacces = describeError(sysError('EACCES', '/media/usb0/receipts/x.qkr.tmp-1'));
  t.equal(eacces.exitCode, Exit.FAILURE, 'EACCES: exit 1');
  t.match(eacces.message, /^\/media\/usb0\/receipts\/x\.qkr\.tmp-1: permission denied/);
  t.equal(describeError(sysError('EPERM', '/x')).exitCode, Exit.FAILURE);
  const erofs = describeError(sysError('EROFS', '/media/usb0/x'));
  t.match(erofs, { exitCode: Exit.FAILURE, message: /mounted read-only/ });
  t.match(describeError(sysError('ENOSPC', '/x')), { exitCode: Exit.FAILURE, message: /disk is full/ });
  t.equal(describeError(sysError('ENOTDIR', '/a/b')).exitCode, Exit.STATE);
  t.equal(describeError(sysError('ECONNREFUSED', undefined, 'connect ECONNREFUSED 127.0.0.1:1')).exitCode, Exit.NO_DEVICE);
  t.equal(describeError(sysError('EBUSY', '/dev/sdb1')).exitCode, Exit.BUSY);
  t.same(describeError(sysError('EWHATEVER', undefined, 'something odd')), { message: 'something odd', exitCode: Exit.FAILURE });
  t.same(describeError(new Error('plain library failure')), { message: 'plain library failure', exitCode: Exit.FAILURE });
});

t.test('typed domain errors by type and code', async (t) => {
  t.equal(describeError(new NoDeviceError('/dev/ttyUSB0', 'cannot open /dev/ttyUSB0: x', 'EACCES')).exitCode, Exit.NO_DEVICE);
  t.equal(describeError(new DeviceBusyError('tcp:h:1', 'tcp:h:1 refused the connection: full')).exitCode, Exit.BUSY);
  t.equal(describeError(new LinkTimeoutError(Group.INJECT, InjectCmd.CHUNK, 1600, 3)).exitCode, Exit.NO_DEVICE);
  t.equal(describeError(new LinkClosedError(new Error('EIO'))).exitCode, Exit.NO_DEVICE);
  t.equal(describeError(new PeerDataError('the terminal sent an out-of-range number')).exitCode, Exit.REFUSED);
  t.equal(describeError(new CarrierError('NOT_A_CARRIER', 'not a carrier')).exitCode, Exit.CARRIER);
  t.equal(describeError(new DownloadError('NOT_AUTHENTIC', 'x')).exitCode, Exit.CARRIER);
  t.equal(describeError(new DamagedFileError('/h/t/T1.json', 'not JSON')).exitCode, Exit.STATE);
  t.equal(describeError(new KmdError('no home', 'NO_HOME')).exitCode, Exit.STATE);
  t.equal(describeError(new KmdError('bad id', 'BAD_ID')).exitCode, Exit.USAGE);
  t.equal(describeError(new KmdError('no folder', 'NO_FOLDER')).exitCode, Exit.STATE);
  t.equal(describeError(new KmdError('short', 'SUPPLY')).exitCode, Exit.FAILURE);
  t.equal(describeError(new TerminalHostError('IMAGE', 'cannot use flash image x')).exitCode, Exit.STATE);
  t.equal(describeError(new TerminalHostError('LISTEN', 'cannot listen')).exitCode, Exit.FAILURE);
  t.equal(describeError(new LockBusyError('KMD home h', '/h/.lock', undefined)).exitCode, Exit.BUSY);
});

t.test('protocol errors in words, the raw code after', async (t) => {
  const timeout = describeError(new LinkTimeoutError(Group.INJECT, InjectCmd.CHUNK, 1600, 3));
  t.equal(timeout.message, 'the terminal did not answer the inject chunk request (group 2 command 1) after 3 attempts, 1.6 s each');
  t.match(describeError(new LinkTimeoutError(Group.DOWNLOAD, 4, 900, 1, 'the link takes no bytes')).message, /^the KMD did not answer the batch read request \(group 5 command 4\) after 1 attempt, 900 ms each \(the link takes no bytes\)$/);
  t.equal(describeError(new LinkError(Rc.STALE_BATCH)).message, 'terminal refused: it already holds a newer batch than this one (STALE_BATCH)');
  t.equal(describeError(new LinkError(Rc.NO_SPACE, 'needs 8192 bits')).message, 'terminal refused: its key pool has no room (NO_SPACE: needs 8192 bits)');
  t.equal(describeError(new LinkError(Rc.STALE_BATCH)).exitCode, Exit.REFUSED);
  t.equal(describeError(new LinkError(Rc.BUSY)).exitCode, Exit.BUSY, 'a busy device: retry later');
  t.match(describeError(new LinkError(99)).message, /^terminal refused: it refused with code 99 \(RC_99\)$/);
});

t.test('every message is one line with the peer\'s control characters escaped', async (t) => {
  const d = describeError(new LinkError(Rc.DENIED, 'no\u001b[2J\u001b]0;pwned\u0007 way\r\nsecond line\u009b31m'));
  t.notMatch(d.message, /[\u0000-\u001f\u007f-\u009f]/, 'no control character left');
  t.match(d.message, /\\x1b\[2J\\x1b\]0;pwned\\x07 way\\x0d\\x0asecond line\\x9b31m/);
  t.equal(describeError(new Error('a\nb')).message, 'a', 'first line only');
});
