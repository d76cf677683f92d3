// Addresses that may carry a password (postgres://, mqtt://), as they may be shown in a message or --json.
/** An address (a database's, a broker's) fit to print: its password, in the userinfo or the query, replaced by ***. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    for (const k of [...u.searchParams.keys()]) if (/pass|secret|key/i.test(k)) u.searchParams.set(k, '***');
    return u.toString().replace(/%2A%2A%2A/g, '***');
  } catch {
    return '(not an address)';
  }
}
