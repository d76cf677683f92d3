// Command group and command ids of link protocol v1 (docs/protocol.md, "Command groups").
// Part of the wire contract: new ids are added, existing ones never renumbered.

export const Group = {
  /** Device parameters, identity and status: served even when unenrolled. */
  SYSTEM: 0,
  /** Diagnostics: echo and a scratch bulk sink for link tests and benchmarks. */
  DIAG: 1,
  /** Sealed key batch injection (begin, chunk, commit). */
  INJECT: 2,
  /** Key use: session negotiation, service-data encrypt/decrypt. */
  KEYS: 3,
  /** Sensitive commands needing a KMD authorization token (zeroize, factory reset). */
  ADMIN: 4,
  /** The KMD's download interface, as served to an enrolled carrier. */
  DOWNLOAD: 5,
  /** The master station's service interface: terminal uplinks in, downlinks out. */
  STATION: 6,
} as const;

export const SystemCmd = {
  PARAMS: 0,
  STATUS: 1,
  AUDIT_LOG: 2,
} as const;

export const DiagCmd = {
  ECHO: 0,
  SINK_BEGIN: 1,
  SINK_CHUNK: 2,
  SINK_STATUS: 3,
} as const;

export const InjectCmd = {
  /** Open (or resume) a sealed batch transfer: header + header tag. */
  BEGIN: 0,
  /** Sealed chunk bytes at the committed offset (windowed bulk transfer). */
  CHUNK: 1,
  /** All chunks verified: make the batch live atomically and return the delivery receipt. */
  COMMIT: 2,
  /** The committed offset of the open transfer. */
  STATUS: 3,
  /** Drop the staged batch. */
  ABORT: 4,
} as const;

export const KeysCmd = {
  /** Open a service-data session: OTP or AEAD, and which sub-pool serves what. */
  NEGOTIATE: 0,
  /** Encrypt service data for the master station (uplink). */
  SEAL: 1,
  /** Decrypt service data from the master station (downlink). */
  OPEN: 2,
  /** Close a session (its key state is wiped). */
  CLOSE: 3,
} as const;

export const AdminCmd = {
  ZEROIZE: 0,
  FACTORY_RESET: 1,
} as const;

export const SystemEvent = {
  /** The pool fell below its low watermark. */
  LOW_WATERMARK: 0,
} as const;

export const DownloadCmd = {
  /** A carrier names itself; the KMD answers with a challenge. */
  HELLO: 0,
  /** The carrier proves it holds its enrolled key (HMAC over the challenge). */
  AUTH: 1,
  /** The notification: sealed batches pending for carriers. */
  NOTIFY: 2,
  /** Ask the KMD to export batches now (terminals, bits). */
  REQUEST: 3,
  /** Read bytes of a pending sealed batch. */
  READ: 4,
  /** The carrier has the batch safely: it leaves the KMD's outbox. */
  TAKEN: 5,
} as const;

export const StationCmd = {
  /** A terminal's sealed uplink, to be opened with the matching keys. */
  UPLINK: 0,
  /** Seal a downlink for a terminal under its AEAD session key. */
  DOWNLINK: 1,
  /** Key accounting per terminal. */
  STATUS: 2,
} as const;
