// printable(): a peer's text cannot drive the terminal it is printed on.
import t from 'tap';
import { printable } from './peer-text.js';

t.test('C0, ESC, DEL, C1 and bidi controls are escaped; everything else is kept', async (t) => {
  t.equal(printable('T1'), 'T1');
  t.equal(printable('qkt-fw 1.2 (ünïcode ✓ 鍵)'), 'qkt-fw 1.2 (ünïcode ✓ 鍵)');
  t.equal(printable('\u001b[31mred\u001b[0m'), '\\x1b[31mred\\x1b[0m');
  t.equal(printable('a\u0000b\u0007c\u007fd\u0085e\u009bf'), 'a\\x00b\\x07c\\x7fd\\x85e\\x9bf');
  t.equal(printable('evil\u202egnp.exe'), 'evil\\u{202e}gnp.exe');
  t.equal(printable('line\r\nnext'), 'line\\x0d\\x0anext');
  for (let c = 0; c < 0x100; c++) {
    const s = printable(String.fromCharCode(c));
    const control = c < 0x20 || (c >= 0x7f && c <= 0x9f);
    t.equal(s.length === 1, !control, `U+${c.toString(16)} ${control ? 'escaped' : 'kept'}`);
  }
});

t.test('cut to a length, non-strings shown as text', async (t) => {
  t.equal(printable('x'.repeat(50), 10), `${'x'.repeat(10)}…`);
  t.equal(printable(42), '42');
  t.equal(printable(undefined), 'undefined');
  t.equal(printable(12345678901234567890n), '12345678901234567890');
  t.equal(printable('a\u001bb'), 'a\\x1bb');
  t.equal(printable('a\u001bb'), 'a\\x1bb', 'twice in a row (no regex state kept)');
});
