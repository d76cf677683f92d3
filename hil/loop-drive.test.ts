// The loop-mounted test drive itself: really mounted ext4, pull and re-plug keep fsynced data,
// yank() loses what was never fsynced, destroy() leaves no device, mount or image behind.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, readdirSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { createLoopDrive, loopDriveSkipReason } from './loop-drive.js';
import { fsyncDir } from '../host-tools/fs-atomic.js';

const skip = loopDriveSkipReason();

function isMounted(mountpoint: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === mountpoint);
}

function attachedTo(image: string): string {
  return execFileSync('losetup', ['-j', image], { encoding: 'utf8' }).trim();
}

function writeSynced(path: string, text: string): void {
  const fd = openSync(path, 'w');
  writeSync(fd, text);
  fsyncSync(fd);
  closeSync(fd);
  fsyncDir(join(path, '..'));
}

t.test('a real ext4 drive: mounted, pulled, re-plugged, destroyed', { skip }, async (t) => {
  const drive = createLoopDrive({ sizeMiB: 16 });
  t.teardown(() => drive.destroy());
  t.match(drive.device, /^\/dev\/loop\d+$/);
  t.ok(drive.mounted);
  t.ok(isMounted(drive.mountpoint), 'listed in mountinfo');
  t.match(attachedTo(drive.image), drive.device);
  t.same(readdirSync(drive.mountpoint), ['lost+found'], 'a freshly formatted ext4');

  writeSynced(join(drive.mountpoint, 'a.txt'), 'kept');
  drive.unmount();
  drive.unmount(); // idempotent
  t.notOk(drive.mounted);
  t.equal(drive.device, '');
  t.notOk(isMounted(drive.mountpoint));
  t.equal(attachedTo(drive.image), '', 'loop device detached: the stick is out');
  t.same(readdirSync(drive.mountpoint), []);

  drive.mount();
  drive.mount(); // idempotent
  t.ok(isMounted(drive.mountpoint));
  t.equal(readFileSync(join(drive.mountpoint, 'a.txt'), 'utf8'), 'kept');

  const { image, mountpoint } = drive;
  drive.destroy();
  drive.destroy(); // idempotent
  t.notOk(isMounted(mountpoint));
  t.notOk(existsSync(image));
  t.throws(() => drive.mount(), /destroyed/);
});

t.test('yank keeps fsynced data and loses what was never fsynced', { skip }, async (t) => {
  // commit=600: no background journal commit, so nothing unsynced reaches the medium by luck.
  const drive = createLoopDrive({ sizeMiB: 16, mountOptions: ['commit=600'] });
  t.teardown(() => drive.destroy());
  writeSynced(join(drive.mountpoint, 'synced.txt'), 'on the medium');
  writeFileSync(join(drive.mountpoint, 'cached.txt'), 'only in the page cache');
  t.ok(existsSync(join(drive.mountpoint, 'cached.txt')));
  drive.yank();
  t.notOk(drive.mounted);
  t.throws(() => drive.yank(), /not plugged in/);
  drive.mount();
  t.equal(readFileSync(join(drive.mountpoint, 'synced.txt'), 'utf8'), 'on the medium');
  t.notOk(existsSync(join(drive.mountpoint, 'cached.txt')), 'the unsynced file died with the power');

  // A clean pull, by contrast, flushes it.
  writeFileSync(join(drive.mountpoint, 'cached.txt'), 'flushed by umount');
  drive.unmount();
  drive.mount();
  t.equal(readFileSync(join(drive.mountpoint, 'cached.txt'), 'utf8'), 'flushed by umount');
});

t.test('createLoopDrive validates its size and cleans up after a failed step', { skip }, async (t) => {
  t.throws(() => createLoopDrive({ sizeMiB: 1 }), RangeError);
  t.throws(() => createLoopDrive({ sizeMiB: 16, mountOptions: ['no_such_option_qkt'] }), /mount .* failed/);
});

t.test('loopDriveSkipReason: false only where a loop drive can be made, else a known cause; never skips in CI where loop devices exist', async (t) => {
  // Checked against the machine, not the type: false means a loop drive can really be made here;
  // a reason names one of the known causes and its fix.
  const r = loopDriveSkipReason();
  if (r === false) {
    const d = createLoopDrive({ sizeMiB: 8 });
    try {
      t.ok(d.mounted && existsSync(d.device), `a loop drive was made (${d.device})`);
    } finally {
      d.destroy();
    }
  } else {
    t.match(r, /need Linux|need root|no \/dev\/loop-control|losetup not installed|mkfs\.ext4 not installed|cannot make a loop drive/);
  }
  const saved = process.env['CI'];
  process.env['CI'] = 'true';
  try {
    if (existsSync('/dev/loop-control')) t.equal(loopDriveSkipReason(), false);
    else t.type(loopDriveSkipReason(), 'string');
  } finally {
    if (saved === undefined) delete process.env['CI'];
    else process.env['CI'] = saved;
  }
});
