// The link protocol's numbers in a field engineer's words: what each request is ("the inject chunk
// request"), who answers it (a terminal, a KMD, a station), and what each refusal code means. The
// numbers stay in the message after the words, for whoever reads docs/protocol.md or a capture.
import { AdminCmd, DiagCmd, DownloadCmd, Group, InjectCmd, KeysCmd, StationCmd, SystemCmd, SystemEvent } from '../../firmware/link/groups.js';
import { Rc, rcName } from '../../firmware/link/errors.js';

const REQUESTS: Record<number, { peer: string; commands: Record<number, string> }> = {
  [Group.SYSTEM]: { peer: 'the terminal', commands: { [SystemCmd.PARAMS]: 'parameters request', [SystemCmd.STATUS]: 'status request', [SystemCmd.AUDIT_LOG]: 'audit log request' } },
  [Group.DIAG]: { peer: 'the terminal', commands: { [DiagCmd.ECHO]: 'echo request', [DiagCmd.SINK_BEGIN]: 'test transfer start', [DiagCmd.SINK_CHUNK]: 'test transfer chunk', [DiagCmd.SINK_STATUS]: 'test transfer status request' } },
  [Group.INJECT]: {
    peer: 'the terminal',
    commands: { [InjectCmd.BEGIN]: 'inject start request', [InjectCmd.CHUNK]: 'inject chunk request', [InjectCmd.COMMIT]: 'inject commit request', [InjectCmd.STATUS]: 'inject status request', [InjectCmd.ABORT]: 'inject abort request' },
  },
  [Group.KEYS]: { peer: 'the terminal', commands: { [KeysCmd.NEGOTIATE]: 'key session request', [KeysCmd.SEAL]: 'encrypt request', [KeysCmd.OPEN]: 'decrypt request', [KeysCmd.CLOSE]: 'session close request' } },
  [Group.ADMIN]: { peer: 'the terminal', commands: { [AdminCmd.ZEROIZE]: 'zeroize request', [AdminCmd.FACTORY_RESET]: 'factory reset request' } },
  [Group.DOWNLOAD]: {
    peer: 'the KMD',
    commands: { [DownloadCmd.HELLO]: 'download hello', [DownloadCmd.AUTH]: 'carrier authentication', [DownloadCmd.NOTIFY]: 'pending batch list request', [DownloadCmd.REQUEST]: 'export request', [DownloadCmd.READ]: 'batch read request', [DownloadCmd.TAKEN]: 'batch taken notice' },
  },
  [Group.STATION]: { peer: 'the station', commands: { [StationCmd.UPLINK]: 'uplink', [StationCmd.DOWNLINK]: 'downlink request', [StationCmd.STATUS]: 'status request' } },
};

/** Who answers requests of `group`: "the terminal", "the KMD", "the station" ("the device" if unknown). */
export function peerName(group: number): string {
  return REQUESTS[group]?.peer ?? 'the device';
}

/** "the inject chunk request (group 2 command 1)"; an unknown pair is "request (group G command C)". */
export function requestName(group: number, command: number): string {
  const words = REQUESTS[group]?.commands[command];
  return `the ${words ?? 'request'} (group ${group} command ${command})`;
}

/** What each refusal code means, as one sentence a field engineer can act on (docs/protocol.md, "Error table"). */
const REFUSALS: Record<number, string> = {
  [Rc.INTERNAL]: 'it failed inside and changed nothing; try again, and report it if it repeats',
  [Rc.NOT_SUPPORTED]: 'it does not know this request (older firmware, or not a qkt module)',
  [Rc.BAD_REQUEST]: 'it could not read the request (a fault of this tool or a garbled line)',
  [Rc.BAD_VERSION]: 'it speaks another protocol version than this tool',
  [Rc.TOO_LARGE]: 'the request was larger than it accepts',
  [Rc.BUSY]: 'it is busy with other requests; try again shortly',
  [Rc.NOT_ENROLLED]: 'it is not enrolled (no identity yet): it needs qkt kmd enroll at the KMD',
  [Rc.WRONG_TERMINAL]: 'the batch is addressed to another terminal',
  [Rc.STALE_BATCH]: 'it already holds a newer batch than this one',
  [Rc.AUTH_FAILED]: 'the data does not authenticate (tampered, or sealed for another module)',
  [Rc.NO_SPACE]: 'its key pool has no room',
  [Rc.OUT_OF_ORDER]: 'a transfer chunk arrived out of order',
  [Rc.NO_TRANSFER]: 'it has no open transfer of that batch (it may have restarted): run the command again',
  [Rc.LOCKED_OUT]: 'too many failed authorizations: the command is locked out',
  [Rc.BAD_TOKEN]: 'the authorization token is wrong or used already',
  [Rc.SELF_TEST_FAILED]: 'its self-test failed and it refuses service: the module needs repair',
  [Rc.FLASH_ERROR]: 'its flash memory failed (worn out or damaged): the module needs repair',
  [Rc.KEYS_EXHAUSTED]: 'it has not enough key for this',
  [Rc.KEY_NOT_AVAILABLE]: 'the key asked for is unknown or used already',
  [Rc.BAD_STATE]: 'the request does not fit its current state',
  [Rc.DENIED]: 'it refused by policy',
};

/** One sentence for refusal code `rc` ("it already holds a newer batch than this one"). */
export function refusalWords(rc: number): string {
  return REFUSALS[rc] ?? `it refused with code ${rc}`;
}

/** `refusalWords` with the raw code after: "it already holds a newer batch than this one (STALE_BATCH)". */
export function describeRefusal(rc: number): string {
  return `${refusalWords(rc)} (${rcName(rc)})`;
}

/**
 * LinkTimeoutError's message: "the terminal did not answer the inject chunk request (group 2
 * command 1) after 3 attempts, 1.6 s each".
 */
export function noAnswerMessage(group: number, command: number, ms: number, attempts: number, note?: string): string {
  const each = ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
  return `${peerName(group)} did not answer ${requestName(group, command)} after ${attempts} attempt${attempts === 1 ? '' : 's'}, ${each} each${note ? ` (${note})` : ''}`;
}

/** LinkClosedError's message: "the connection closed: <why>" (a cable pulled, a device gone, a socket reset). */
export function linkClosedMessage(cause?: Error): string {
  return cause ? `the connection closed: ${cause.message}` : 'the connection closed';
}

// ---- Identifiers, as docs/protocol.md and a capture name them (qkt monitor, docs/wireshark) ----

const byValue = (table: Record<string, number>) => new Map(Object.entries(table).map(([k, v]) => [v, k]));
const GROUP_IDS = byValue(Group);
const COMMAND_IDS: Record<number, Map<number, string>> = {
  [Group.SYSTEM]: byValue(SystemCmd),
  [Group.DIAG]: byValue(DiagCmd),
  [Group.INJECT]: byValue(InjectCmd),
  [Group.KEYS]: byValue(KeysCmd),
  [Group.ADMIN]: byValue(AdminCmd),
  [Group.DOWNLOAD]: byValue(DownloadCmd),
  [Group.STATION]: byValue(StationCmd),
};
const EVENT_IDS: Record<number, Map<number, string>> = { [Group.SYSTEM]: byValue(SystemEvent) };

/** "INJECT" for group 2; an unknown group is its number ("9"). */
export function groupId(group: number): string {
  return GROUP_IDS.get(group) ?? String(group);
}

/** "CHUNK" for group 2 command 1 ("LOW_WATERMARK" for a SYSTEM event 0); unknown: the number. */
export function commandId(group: number, command: number, event = false): string {
  return (event ? EVENT_IDS : COMMAND_IDS)[group]?.get(command) ?? String(command);
}
