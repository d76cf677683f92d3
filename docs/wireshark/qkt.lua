-- Wireshark dissector for the qkt link protocol v1 (docs/protocol.md sections 2-3), reading the
-- captures `qkt monitor --pcap FILE` writes: link type LINKTYPE_USER0 (147), each record a 4-byte
-- pseudo-header (version, direction, flags, reserved) then one frame's bytes between its 0x00
-- delimiters, still COBS-encoded (docs/cli.md, "qkt monitor"). It un-COBSes the frame, checks the
-- CRC-32 (expert info when it fails), and shows the 6-byte header with names and the CBOR payload
-- (RFC 8949) as a tree. A FEC shard (docs/protocol.md 2.6: flag 0x20, or a body starting 0xFE)
-- shows its fields and 16-bit check; a frame the monitor put together from shards (flag 0x40) is
-- shown as any frame, noted as reassembled. Install: docs/wireshark/README.md. Tested by docs/wireshark/dissector.test.ts.
--
-- The name tables below copy firmware/link/groups.ts and firmware/link/errors.ts; the test decodes
-- a frame for every id in those files and compares, so a new id there fails it until added here.

local qkt = Proto("qkt", "qkt link protocol")

local DIRECTIONS = { [0] = "host->device", [1] = "device->host" }
local KINDS = { [0] = "request", [1] = "response", [2] = "error", [3] = "event" }
local GROUPS = { [0] = "SYSTEM", [1] = "DIAG", [2] = "INJECT", [3] = "KEYS", [4] = "ADMIN", [5] = "DOWNLOAD", [6] = "STATION" }
local COMMANDS = {
  [0] = { [0] = "PARAMS", [1] = "STATUS", [2] = "AUDIT_LOG" },
  [1] = { [0] = "ECHO", [1] = "SINK_BEGIN", [2] = "SINK_CHUNK", [3] = "SINK_STATUS" },
  [2] = { [0] = "BEGIN", [1] = "CHUNK", [2] = "COMMIT", [3] = "STATUS", [4] = "ABORT" },
  [3] = { [0] = "NEGOTIATE", [1] = "SEAL", [2] = "OPEN", [3] = "CLOSE" },
  [4] = { [0] = "ZEROIZE", [1] = "FACTORY_RESET" },
  [5] = { [0] = "HELLO", [1] = "AUTH", [2] = "NOTIFY", [3] = "REQUEST", [4] = "READ", [5] = "TAKEN" },
  [6] = { [0] = "UPLINK", [1] = "DOWNLINK", [2] = "STATUS" },
}
local EVENTS = { [0] = { [0] = "LOW_WATERMARK" } }
local RCS = {
  [0] = "OK", [1] = "INTERNAL", [2] = "NOT_SUPPORTED", [3] = "BAD_REQUEST", [4] = "BAD_VERSION",
  [5] = "TOO_LARGE", [6] = "BUSY", [7] = "NOT_ENROLLED", [8] = "WRONG_TERMINAL", [9] = "STALE_BATCH",
  [10] = "AUTH_FAILED", [11] = "NO_SPACE", [12] = "OUT_OF_ORDER", [13] = "NO_TRANSFER",
  [14] = "LOCKED_OUT", [15] = "BAD_TOKEN", [16] = "SELF_TEST_FAILED", [17] = "FLASH_ERROR",
  [18] = "KEYS_EXHAUSTED", [19] = "KEY_NOT_AVAILABLE", [20] = "BAD_STATE", [21] = "DENIED",
}

local HEADER_SIZE = 6
local CRC_SIZE = 4
local MIN_BODY_SIZE = 11
local MAX_DEPTH = 32
-- FEC shards (docs/protocol.md 2.6, firmware/link/fec.ts): mark, id, k, n, index, seen, data, check.
local SHARD_MARK = 0xFE
local SHARD_HEADER = 6
local SHARD_CHECK = 2
local MIN_SHARD = 4
local MAX_SHARD = 240
-- NEED (docs/protocol.md 2.6): a receiver of shards asks for more of a frame: mark, id, k, n, need, check.
local NEED_MARK = 0xFD
local NEED_SIZE = 7
local FLAG_FEC_SHARD = 0x20
local FLAG_FEC_REASSEMBLED = 0x40
-- Byte strings of these groups may be sealed key material: their bytes are not put in the label.
local LENGTH_ONLY_GROUPS = { [2] = true, [4] = true }

local F = qkt.fields
F.ph_version = ProtoField.uint8("qkt.ph.version", "Pseudo-header version")
F.direction = ProtoField.uint8("qkt.direction", "Direction", base.DEC, DIRECTIONS)
F.flags = ProtoField.uint8("qkt.flags", "Monitor flags", base.HEX)
F.flag_cobs = ProtoField.bool("qkt.flags.bad_cobs", "Bad COBS", 8, nil, 0x01)
F.flag_crc = ProtoField.bool("qkt.flags.bad_crc", "Bad CRC", 8, nil, 0x02)
F.flag_short = ProtoField.bool("qkt.flags.short", "Too short", 8, nil, 0x04)
F.flag_oversize = ProtoField.bool("qkt.flags.oversize", "Oversize", 8, nil, 0x08)
F.flag_message = ProtoField.bool("qkt.flags.bad_message", "Bad message", 8, nil, 0x10)
F.flag_fec_shard = ProtoField.bool("qkt.flags.fec_shard", "FEC shard", 8, nil, FLAG_FEC_SHARD)
F.flag_fec_reassembled = ProtoField.bool("qkt.flags.fec_reassembled", "Reassembled from FEC shards", 8, nil, FLAG_FEC_REASSEMBLED)
F.encoded = ProtoField.bytes("qkt.encoded", "COBS-encoded frame")
F.body_len = ProtoField.uint32("qkt.body_len", "Body length (decoded)")
F.version = ProtoField.uint8("qkt.version", "Version")
F.kind = ProtoField.uint8("qkt.kind", "Kind", base.DEC, KINDS)
F.group = ProtoField.uint8("qkt.group", "Group", base.DEC, GROUPS)
F.command = ProtoField.uint8("qkt.command", "Command")
F.command_name = ProtoField.string("qkt.command_name", "Command name")
F.seq = ProtoField.uint16("qkt.seq", "Sequence number")
F.payload = ProtoField.bytes("qkt.payload", "Payload (CBOR)")
F.crc = ProtoField.uint32("qkt.crc", "CRC-32", base.HEX)
F.crc_good = ProtoField.bool("qkt.crc.good", "CRC-32 good")
F.rc = ProtoField.uint32("qkt.rc", "Refusal code", base.DEC, RCS)
F.reason = ProtoField.string("qkt.reason", "Reason")
F.fec_id = ProtoField.uint8("qkt.fec.id", "Frame id")
F.fec_k = ProtoField.uint8("qkt.fec.k", "Data shards (k)")
F.fec_n = ProtoField.uint8("qkt.fec.n", "All shards (n)")
F.fec_index = ProtoField.uint8("qkt.fec.index", "Shard index")
F.fec_seen = ProtoField.uint8("qkt.fec.seen", "Line seen by the sender")
F.fec_data = ProtoField.uint32("qkt.fec.data", "Shard data length")
F.fec_check = ProtoField.uint16("qkt.fec.check", "Shard check", base.HEX)
F.fec_check_good = ProtoField.bool("qkt.fec.check.good", "Shard check good")
F.need_need = ProtoField.uint8("qkt.need.need", "Shards needed")
F.fec_reassembled = ProtoField.bool("qkt.fec.reassembled", "Reassembled from FEC shards")
F.cbor_key = ProtoField.string("qkt.cbor.key", "Map key")
F.cbor_uint = ProtoField.uint64("qkt.cbor.uint", "Unsigned integer")
F.cbor_nint = ProtoField.string("qkt.cbor.nint", "Negative integer")
F.cbor_bytes = ProtoField.bytes("qkt.cbor.bytes", "Byte string")
F.cbor_bytes_len = ProtoField.uint32("qkt.cbor.bytes_len", "Byte string length")
F.cbor_text = ProtoField.string("qkt.cbor.text", "Text string")
F.cbor_simple = ProtoField.string("qkt.cbor.simple", "Simple value")
F.cbor_float = ProtoField.double("qkt.cbor.float", "Float")
F.cbor_tag = ProtoField.uint64("qkt.cbor.tag", "Tag")
F.cbor_array = ProtoField.uint32("qkt.cbor.array", "Array")
F.cbor_map = ProtoField.uint32("qkt.cbor.map", "Map")

local E_CRC = ProtoExpert.new("qkt.crc.bad", "Bad CRC-32", expert.group.CHECKSUM, expert.severity.ERROR)
local E_COBS = ProtoExpert.new("qkt.cobs.bad", "Not valid COBS", expert.group.MALFORMED, expert.severity.ERROR)
local E_SHORT = ProtoExpert.new("qkt.short", "Too short for a frame (line noise or garbage)", expert.group.MALFORMED, expert.severity.ERROR)
local E_CUT = ProtoExpert.new("qkt.oversize", "Frame larger than the capture holds or than maxFrame", expert.group.MALFORMED, expert.severity.WARN)
local E_CBOR = ProtoExpert.new("qkt.cbor.bad", "Malformed CBOR", expert.group.MALFORMED, expert.severity.ERROR)
local E_KIND = ProtoExpert.new("qkt.kind.bad", "Unknown kind or protocol version", expert.group.PROTOCOL, expert.severity.WARN)
local E_REFUSAL = ProtoExpert.new("qkt.refusal", "Refusal", expert.group.RESPONSE_CODE, expert.severity.NOTE)
local E_FEC_CHECK = ProtoExpert.new("qkt.fec.check.bad", "Bad shard check", expert.group.CHECKSUM, expert.severity.ERROR)
local E_FEC_BAD = ProtoExpert.new("qkt.fec.bad", "Not a whole FEC shard", expert.group.MALFORMED, expert.severity.ERROR)
qkt.experts = { E_CRC, E_COBS, E_SHORT, E_CUT, E_CBOR, E_KIND, E_REFUSAL, E_FEC_CHECK, E_FEC_BAD }

-- CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), as node:zlib's crc32 (docs/protocol.md 2.3).
local CRC_TABLE = {}
for i = 0, 255 do
  local c = i
  for _ = 1, 8 do
    if bit32.band(c, 1) == 1 then c = bit32.bxor(0xEDB88320, bit32.rshift(c, 1)) else c = bit32.rshift(c, 1) end
  end
  CRC_TABLE[i] = c
end

local function crc32(bytes, n)
  local c = 0xFFFFFFFF
  for i = 0, n - 1 do
    c = bit32.bxor(CRC_TABLE[bit32.band(bit32.bxor(c, bytes:get_index(i)), 0xFF)], bit32.rshift(c, 8))
  end
  return bit32.bnot(c)
end

-- COBS decode (docs/protocol.md 2.2); nil when not valid COBS (a 0x00 inside, a code past the end).
local function cobs_decode(enc)
  local n = enc:len()
  local out = ByteArray.new()
  out:set_size(n)
  local i, o = 0, 0
  while i < n do
    local code = enc:get_index(i)
    if code == 0 or i + code > n then return nil end
    i = i + 1
    for _ = 1, code - 1 do
      local b = enc:get_index(i)
      if b == 0 then return nil end
      out:set_index(o, b)
      o = o + 1
      i = i + 1
    end
    if code ~= 0xFF and i < n then
      out:set_index(o, 0)
      o = o + 1
    end
  end
  out:set_size(o)
  return out
end

-- ---- CBOR (RFC 8949) into the tree -----------------------------------------------------------

local CborError = {}

local function fail(msg, at)
  error(setmetatable({ msg = msg, at = at }, CborError), 0)
end

-- The argument of a head at `pos` (info = low 5 bits); returns value (a number, or a UInt64 above
-- 2^53), the position after it, and whether it was indefinite.
local function argument(tvb, pos, info, limit)
  if info < 24 then return info, pos, false end
  local size = ({ [24] = 1, [25] = 2, [26] = 4, [27] = 8 })[info]
  if info == 31 then return nil, pos, true end
  if not size then fail("reserved additional information " .. info, pos - 1) end
  if pos + size > limit then fail("unexpected end", pos) end
  if size == 8 then
    local v = tvb:range(pos, 8):uint64()
    if v <= UInt64(0xFFFFFFFF, 0x1FFFFF) then return v:tonumber(), pos + 8, false end
    return v, pos + 8, false
  end
  return tvb:range(pos, size):uint(), pos + size, false
end

local function short_hex(tvb, pos, len)
  local shown = math.min(len, 16)
  local hex = shown > 0 and tvb:range(pos, shown):bytes():tohex(true) or ""
  if len > 16 then return "h'" .. string.sub(hex, 1, 8) .. "..' (" .. len .. " bytes)" end
  return "h'" .. hex .. "'"
end

local item -- forward

-- One CBOR item at `pos`, added under `tree` labelled with `prefix` (a map key or array index).
-- Returns the position after it, and a short text of scalars (for map keys); "break" for 0xFF
-- where allowed.
item = function(tvb, pos, limit, tree, prefix, depth, ctx, break_ok)
  if depth > MAX_DEPTH then fail("nested deeper than " .. MAX_DEPTH .. " levels", pos) end
  if pos >= limit then fail("unexpected end", pos) end
  local start = pos
  local ib = tvb:range(pos, 1):uint()
  local major = bit32.rshift(ib, 5)
  local info = bit32.band(ib, 31)
  pos = pos + 1
  local label = prefix and (prefix .. ": ") or ""
  if major == 0 or major == 1 then
    local v, p, indef = argument(tvb, pos, info, limit)
    if indef then fail("integer with indefinite length", start) end
    if major == 0 then
      local u = type(v) == "number" and UInt64.new(v) or v
      tree:add(F.cbor_uint, tvb:range(start, p - start), u, label .. tostring(v))
      return p, tostring(v)
    end
    local text
    if type(v) == "number" then text = string.format("%d", -1 - v)
    elseif v == UInt64.max() then text = "-18446744073709551616"
    else text = "-" .. tostring(v + 1) end
    tree:add(F.cbor_nint, tvb:range(start, p - start), text, label .. text)
    return p, text
  elseif major == 2 or major == 3 then
    local len, p, indef = argument(tvb, pos, info, limit)
    if indef then
      local sub = tree:add(F.cbor_bytes_len, tvb:range(start, 1), 0, label .. "(_ indefinite-length string)")
      while true do
        if p >= limit then fail("unexpected end", p) end
        if tvb:range(p, 1):uint() == 0xFF then p = p + 1 break end
        local cb = tvb:range(p, 1):uint()
        if bit32.rshift(cb, 5) ~= major or bit32.band(cb, 31) == 31 then fail("bad chunk in an indefinite string", p) end
        p = item(tvb, p, limit, sub, "chunk", depth + 1, ctx)
      end
      sub:set_len(p - start)
      return p, "(_ ...)"
    end
    if type(len) ~= "number" or p + len > limit then fail("string length runs past the end", p) end
    if major == 2 then
      local r = tvb:range(start, p + len - start)
      local text = ctx.length_only and ("(" .. len .. " bytes)") or short_hex(tvb, p, len)
      local it = tree:add(F.cbor_bytes_len, r, len, label .. "byte string, " .. len .. " bytes" .. (ctx.length_only and "" or (": " .. short_hex(tvb, p, len))))
      if not ctx.length_only and len > 0 then it:add(F.cbor_bytes, tvb:range(p, len)) end
      return p + len, text
    end
    local s = len > 0 and tvb:range(p, len):string(ENC_UTF_8) or ""
    local r = tvb:range(start, p + len - start)
    tree:add(F.cbor_text, r, s, label .. '"' .. s .. '"')
    return p + len, s
  elseif major == 4 or major == 5 then
    local n, p, indef = argument(tvb, pos, info, limit)
    if not indef and (type(n) ~= "number" or n > limit - p) then fail("length runs past the end", pos) end
    local field = major == 4 and F.cbor_array or F.cbor_map
    local what = major == 4 and "array" or "map"
    local sub = tree:add(field, tvb:range(start, 1), indef and 0 or n, label .. what .. (indef and " (indefinite)" or (" of " .. n)))
    local i = 0
    while indef or i < n do
      if indef and p < limit and tvb:range(p, 1):uint() == 0xFF then p = p + 1 break end
      if major == 4 then
        p = item(tvb, p, limit, sub, "[" .. i .. "]", depth + 1, ctx)
      else
        local key_start = p
        -- The key: text keys become the label of their value; other keys are shown as items too.
        local kb = (p < limit) and tvb:range(p, 1):uint() or fail("unexpected end", p)
        local key, key_label
        if bit32.rshift(kb, 5) == 3 and bit32.band(kb, 31) ~= 31 then
          local klen, kp = argument(tvb, p + 1, bit32.band(kb, 31), limit)
          if type(klen) ~= "number" or kp + klen > limit then fail("key length runs past the end", kp) end
          key = klen > 0 and tvb:range(kp, klen):string(ENC_UTF_8) or ""
          sub:add(F.cbor_key, tvb:range(key_start, kp + klen - key_start), key):set_hidden()
          p = kp + klen
          key_label = '"' .. key .. '"'
        else
          p, key = item(tvb, p, limit, sub, "key", depth + 1, ctx)
          key_label = key
        end
        local value
        p, value = item(tvb, p, limit, sub, key_label, depth + 1, ctx)
        -- Top-level scalars by key, for the error reply's rc and r (docs/protocol.md 3.4).
        if depth == 0 then ctx.top[key] = value end
      end
      i = i + 1
    end
    sub:set_len(p - start)
    return p, what
  elseif major == 6 then
    local tag, p, indef = argument(tvb, pos, info, limit)
    if indef then fail("tag with indefinite length", start) end
    local sub = tree:add(F.cbor_tag, tvb:range(start, p - start), type(tag) == "number" and UInt64.new(tag) or tag, label .. "tag " .. tostring(tag))
    p = item(tvb, p, limit, sub, nil, depth + 1, ctx)
    sub:set_len(p - start)
    return p, "tag"
  else
    if info == 31 then
      if break_ok then return pos, "break" end
      fail("break outside an indefinite-length item", start)
    end
    local names = { [20] = "false", [21] = "true", [22] = "null", [23] = "undefined" }
    if names[info] then
      tree:add(F.cbor_simple, tvb:range(start, 1), names[info], label .. names[info])
      return pos, names[info]
    end
    if info < 20 then
      tree:add(F.cbor_simple, tvb:range(start, 1), "simple(" .. info .. ")", label .. "simple(" .. info .. ")")
      return pos, "simple"
    end
    if info == 24 then
      if pos + 1 > limit then fail("unexpected end", pos) end
      local v = tvb:range(pos, 1):uint()
      tree:add(F.cbor_simple, tvb:range(start, 2), "simple(" .. v .. ")", label .. "simple(" .. v .. ")")
      return pos + 1, "simple"
    end
    local size = ({ [25] = 2, [26] = 4, [27] = 8 })[info]
    if not size then fail("reserved simple value encoding " .. info, start) end
    if pos + size > limit then fail("unexpected end", pos) end
    local v
    if size == 2 then
      local h = tvb:range(pos, 2):uint()
      local e = bit32.band(bit32.rshift(h, 10), 0x1F)
      local m = bit32.band(h, 0x3FF)
      if e == 0 then v = m * 2 ^ -24 elseif e == 31 then v = (m == 0) and math.huge or (0 / 0) else v = (m + 1024) * 2 ^ (e - 25) end
      if bit32.band(h, 0x8000) ~= 0 then v = -v end
    else
      v = tvb:range(pos, size):float()
    end
    tree:add(F.cbor_float, tvb:range(start, 1 + size), v, label .. tostring(v))
    return pos + size, tostring(v)
  end
end

-- ---- A FEC shard ---------------------------------------------------------------------------

-- One shard body (COBS-decoded, n bytes): its fields and its check. Its data bytes are shown by
-- length only: they are pieces of a frame that may carry sealed key material.
local function dissect_shard(btvb, body, n, root, pinfo, dir_text)
  local st = root:add(btvb:range(0, n), "FEC shard")
  if n < SHARD_HEADER + SHARD_CHECK then
    st:add_proto_expert_info(E_FEC_BAD, "too short for a FEC shard: " .. n .. " bytes decoded, a shard has at least " .. (SHARD_HEADER + MIN_SHARD + SHARD_CHECK))
    pinfo.cols.info = dir_text .. " FEC shard, too short (" .. n .. " bytes)"
    return
  end
  local s = n - SHARD_HEADER - SHARD_CHECK
  local id = btvb:range(1, 1):uint()
  local k = btvb:range(2, 1):uint()
  local total = btvb:range(3, 1):uint()
  local index = btvb:range(4, 1):uint()
  st:add(F.fec_id, btvb:range(1, 1))
  st:add(F.fec_k, btvb:range(2, 1))
  st:add(F.fec_n, btvb:range(3, 1))
  st:add(F.fec_index, btvb:range(4, 1)):append_text(index < k and " (data)" or " (parity)")
  st:add(F.fec_seen, btvb:range(5, 1))
  local data_item = st:add(F.fec_data, btvb:range(SHARD_HEADER, math.max(s, 0)), s)
  local want = btvb:range(n - SHARD_CHECK, SHARD_CHECK):uint()
  local got = bit32.band(crc32(body, n - SHARD_CHECK), 0xFFFF)
  local check_item = st:add(F.fec_check, btvb:range(n - SHARD_CHECK, SHARD_CHECK))
  local good = want == got
  check_item:add(F.fec_check_good, btvb:range(n - SHARD_CHECK, SHARD_CHECK), good)
  local info = string.format("%s FEC shard %d of %d, frame id %d, k %d, s %d", dir_text, index, total, id, k, s)
  if not good then
    check_item:add_proto_expert_info(E_FEC_CHECK, string.format("bad shard check: shard says 0x%04x, computed 0x%04x", want, got))
    info = info .. " [bad check]"
  elseif s < MIN_SHARD or s > MAX_SHARD or k == 0 or total < k or index >= total then
    -- A receiver drops these as corrupt even with a good check (docs/protocol.md 2.6).
    data_item:add_proto_expert_info(E_FEC_BAD, string.format("impossible shard: k %d, n %d, index %d, %d data bytes (4..240)", k, total, index, s))
    info = info .. " [impossible]"
  end
  root:append_text(string.format(", FEC shard %d of %d, frame id %d", index, total, id))
  pinfo.cols.info = info
end

-- One NEED body (COBS-decoded, n bytes): the frame it names, how many shards it lacks, its check.
local function dissect_need(btvb, body, n, root, pinfo, dir_text)
  local st = root:add(btvb:range(0, n), "FEC NEED")
  if n ~= NEED_SIZE then
    st:add_proto_expert_info(E_FEC_BAD, "a NEED has " .. NEED_SIZE .. " bytes, this one " .. n)
    pinfo.cols.info = dir_text .. " FEC NEED, " .. n .. " bytes (not " .. NEED_SIZE .. ")"
    return
  end
  local id = btvb:range(1, 1):uint()
  local k = btvb:range(2, 1):uint()
  local total = btvb:range(3, 1):uint()
  local need = btvb:range(4, 1):uint()
  st:add(F.fec_id, btvb:range(1, 1))
  st:add(F.fec_k, btvb:range(2, 1))
  st:add(F.fec_n, btvb:range(3, 1))
  st:add(F.need_need, btvb:range(4, 1))
  local want = btvb:range(5, 2):uint()
  local got = bit32.band(crc32(body, 5), 0xFFFF)
  local check_item = st:add(F.fec_check, btvb:range(5, 2))
  local good = want == got
  check_item:add(F.fec_check_good, btvb:range(5, 2), good)
  local info = string.format("%s FEC NEED: %d more shards of frame id %d (k %d, n %d)", dir_text, need, id, k, total)
  if not good then
    check_item:add_proto_expert_info(E_FEC_CHECK, string.format("bad NEED check: NEED says 0x%04x, computed 0x%04x", want, got))
    info = info .. " [bad check]"
  elseif k == 0 or total < k or need == 0 then
    st:add_proto_expert_info(E_FEC_BAD, string.format("impossible NEED: k %d, n %d, need %d", k, total, need))
    info = info .. " [impossible]"
  end
  root:append_text(string.format(", FEC NEED %d of frame id %d", need, id))
  pinfo.cols.info = info
end

-- ---- The frame -------------------------------------------------------------------------------

function qkt.dissector(tvb, pinfo, tree)
  if tvb:len() < 4 then return 0 end
  pinfo.cols.protocol = "QKT"
  local root = tree:add(qkt, tvb:range(0))
  local ph = root:add(tvb:range(0, 4), "Monitor pseudo-header")
  ph:add(F.ph_version, tvb:range(0, 1))
  local dir = tvb:range(1, 1):uint()
  ph:add(F.direction, tvb:range(1, 1))
  local flags = ph:add(F.flags, tvb:range(2, 1))
  for _, f in ipairs({ F.flag_cobs, F.flag_crc, F.flag_short, F.flag_oversize, F.flag_message, F.flag_fec_shard, F.flag_fec_reassembled }) do flags:add(f, tvb:range(2, 1)) end
  -- Only the monitor knows the maxFrame the module announced: its oversize verdict is shown as is.
  local flag_bits = tvb:range(2, 1):uint()
  if bit32.band(flag_bits, 0x08) ~= 0 and tvb:reported_len() == tvb:len() then
    flags:add_proto_expert_info(E_CUT, "the monitor saw a body larger than the maxFrame the module announced")
  end
  pinfo.p2p_dir = (dir == 0) and P2P_DIR_SENT or P2P_DIR_RECV
  pinfo.cols.src = (dir == 0) and "host" or "device"
  pinfo.cols.dst = (dir == 0) and "device" or "host"
  local dir_text = DIRECTIONS[dir] or ("direction " .. dir)

  local enc_len = tvb:len() - 4
  if enc_len <= 0 then
    pinfo.cols.info = dir_text .. " empty record"
    return tvb:len()
  end
  local enc_range = tvb:range(4, enc_len)
  local enc_item = root:add(F.encoded, enc_range)
  if tvb:reported_len() > tvb:len() then
    enc_item:add_proto_expert_info(E_CUT, "frame cut: " .. tvb:reported_len() - 4 .. " bytes on the wire, " .. enc_len .. " captured")
    pinfo.cols.info = dir_text .. " oversize frame (" .. (tvb:reported_len() - 4) .. " bytes on the wire)"
    return tvb:len()
  end
  local body = cobs_decode(enc_range:bytes())
  if not body then
    enc_item:add_proto_expert_info(E_COBS)
    pinfo.cols.info = dir_text .. " bad COBS (" .. enc_len .. " bytes)"
    return tvb:len()
  end
  local btvb = body:tvb("COBS-decoded body")
  local n = body:len()
  root:add(F.body_len, btvb:range(0, math.max(n, 0)), n)
  -- A frame's first byte is its version, never 0xFD or 0xFE: 0xFD is a NEED, 0xFE a shard.
  if n > 0 and body:get_index(0) == NEED_MARK then
    enc_item:set_text("COBS-encoded NEED, " .. enc_len .. " bytes")
    dissect_need(btvb, body, n, root, pinfo, dir_text)
    return tvb:len()
  end
  if bit32.band(flag_bits, FLAG_FEC_SHARD) ~= 0 or (n > 0 and body:get_index(0) == SHARD_MARK) then
    -- A shard's bytes may be part of a sealed chunk or a token: its record by length only too.
    enc_item:set_text("COBS-encoded shard, " .. enc_len .. " bytes")
    dissect_shard(btvb, body, n, root, pinfo, dir_text)
    return tvb:len()
  end
  local reassembled = bit32.band(flag_bits, FLAG_FEC_REASSEMBLED) ~= 0
  if reassembled then
    root:add(F.fec_reassembled, tvb:range(2, 1), true, "Reassembled from FEC shards: the monitor put this frame together from the shards before it; these bytes were not on the wire as such")
  end
  local note = reassembled and " [reassembled from FEC shards]" or ""
  if n < MIN_BODY_SIZE then
    enc_item:add_proto_expert_info(E_SHORT, "too short: " .. n .. " bytes decoded, a frame has at least " .. MIN_BODY_SIZE)
    pinfo.cols.info = dir_text .. " too short (" .. n .. " bytes decoded): line noise or garbage" .. note
    return tvb:len()
  end

  local plen = n - HEADER_SIZE - CRC_SIZE
  local want = btvb:range(n - CRC_SIZE, 4):uint()
  local got = crc32(body, n - CRC_SIZE)
  local crc_item = root:add(F.crc, btvb:range(n - CRC_SIZE, 4))
  local good = want == got
  crc_item:add(F.crc_good, btvb:range(n - CRC_SIZE, 4), good)
  if not good then
    crc_item:add_proto_expert_info(E_CRC, string.format("bad CRC-32: frame says 0x%08x, computed 0x%08x", want, got))
    pinfo.cols.info = dir_text .. " bad CRC" .. note
    return tvb:len()
  end

  local hdr = root:add(btvb:range(0, HEADER_SIZE), "Header")
  local version = btvb:range(0, 1):uint()
  local kind = btvb:range(1, 1):uint()
  local group = btvb:range(2, 1):uint()
  local command = btvb:range(3, 1):uint()
  local seq = btvb:range(4, 2):uint()
  hdr:add(F.version, btvb:range(0, 1))
  local kind_item = hdr:add(F.kind, btvb:range(1, 1))
  hdr:add(F.group, btvb:range(2, 1))
  local names = (kind == 3) and EVENTS[group] or COMMANDS[group]
  local cname = (names and names[command]) or tostring(command)
  hdr:add(F.command, btvb:range(3, 1)):append_text(" (" .. cname .. ")")
  hdr:add(F.command_name, btvb:range(3, 1), cname)
  hdr:add(F.seq, btvb:range(4, 2))
  if version ~= 1 or not KINDS[kind] then kind_item:add_proto_expert_info(E_KIND, "version " .. version .. ", kind " .. kind .. ": not a v1 message") end
  local gname = GROUPS[group] or tostring(group)
  local info = string.format("%s %s %s.%s seq=%d", dir_text, KINDS[kind] or ("kind " .. kind), gname, cname, seq)

  local prange = btvb:range(HEADER_SIZE, plen)
  local ptree = root:add(F.payload, prange)
  local ctx = { length_only = LENGTH_ONLY_GROUPS[group] or (group == 5 and command == 4), top = {} }
  if ctx.length_only then
    -- A bytes field shows its bytes in its label: for frames that may carry sealed key material
    -- (INJECT, ADMIN, DOWNLOAD READ) the labels say lengths only, as the CBOR tree does.
    ptree:set_text("Payload (CBOR), " .. plen .. " bytes; byte strings shown by length only")
    enc_item:set_text("COBS-encoded frame, " .. enc_len .. " bytes")
  end
  local ok, err = pcall(function()
    local p = item(btvb, HEADER_SIZE, HEADER_SIZE + plen, ptree, nil, 0, ctx)
    if p < HEADER_SIZE + plen then fail((HEADER_SIZE + plen - p) .. " bytes after the CBOR item", p) end
  end)
  if not ok then
    local msg = (type(err) == "table" and err.msg) and ("malformed CBOR at body byte " .. err.at .. ": " .. err.msg) or tostring(err)
    ptree:add_proto_expert_info(E_CBOR, msg)
    info = info .. " [malformed CBOR]"
  end

  -- An error reply: the refusal code by name, and its reason.
  if kind == 2 and ok then
    local rc_text = ctx.top["rc"]
    local rc = tonumber(rc_text or "")
    local reason = ctx.top["r"]
    if type(rc) == "number" then
      -- qkt.rc is a uint32: a code that is not a whole number in its range (a crafted or damaged
      -- frame: -1, 1.5, 2^32, 2^64-1) is named by its CBOR text and not put in the field, where
      -- it would show wrapped or truncated (2^32 as "OK (0)", and match qkt.rc == 0).
      local in_range = rc >= 0 and rc <= 0xFFFFFFFF and math.floor(rc) == rc
      local name = (in_range and RCS[rc]) or ("RC_" .. rc_text)
      local rc_item = in_range and root:add(F.rc, prange, rc) or root:add(prange, "Refusal code: " .. rc_text .. " (out of range)")
      if reason then root:add(F.reason, prange, reason) end
      rc_item:add_proto_expert_info(E_REFUSAL, "refused: " .. name .. (reason and (" (" .. reason .. ")") or ""))
      info = string.format("%s error %s (%s.%s) seq=%d%s", dir_text, name, gname, cname, seq, reason and (' "' .. reason .. '"') or "")
    end
  end
  root:append_text(string.format(", %s %s.%s seq %d", KINDS[kind] or ("kind " .. kind), gname, cname, seq))
  pinfo.cols.info = info .. note
  return tvb:len()
end

-- Captures of `qkt monitor` use LINKTYPE_USER0 (147), which Wireshark reads as WTAP_ENCAP_USER0.
local encaps = wtap_encaps or wtap
DissectorTable.get("wtap_encap"):add(encaps.USER0, qkt)
