-- handoff.crypto inside the real runtime. Expected values are known-answer vectors from
-- the RFCs, or were computed once with the openssl CLI when this file was written (the
-- RSA key pair too; only its public half and the signatures are kept here).
local crypto = require "handoff.crypto"
local T = {}

local function eq(got, want, what)
  assert(got == want, ("%s: got %s, want %s"):format(what, tostring(got), tostring(want)))
end

local function bytes(...)
  return string.char(...)
end

local function raises(pattern, f, ...)
  local ok, err = pcall(f, ...)
  assert(not ok, "expected an error matching " .. pattern)
  assert(tostring(err):match(pattern), ("error %q does not match %q"):format(tostring(err), pattern))
end

-- RFC 4231 test cases 1-4, 6 and 7 (case 5 is a truncated MAC).
function T.hmac_sha256_rfc4231()
  local k25 = bytes(table.unpack((function() local t = {} for i = 1, 25 do t[i] = i end return t end)()))
  local big_key = ("\xaa"):rep(131)
  local cases = {
    { ("\x0b"):rep(20), "Hi There",
      "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7" },
    { "Jefe", "what do ya want for nothing?",
      "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843" },
    { ("\xaa"):rep(20), ("\xdd"):rep(50),
      "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe" },
    { k25, ("\xcd"):rep(50),
      "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b" },
    { big_key, "Test Using Larger Than Block-Size Key - Hash Key First",
      "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54" },
    { big_key, "This is a test using a larger than block-size key and a larger than block-size data."
        .. " The key needs to be hashed before being used by the HMAC algorithm.",
      "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2" },
  }
  for i, c in ipairs(cases) do
    eq(crypto.hmac("sha256", c[1], c[2]), c[3], "case " .. i)
  end
  eq(crypto.hmac("sha256", "", ""), "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad",
     "empty key and data")
end

-- A key used again is not keyed again (crypto.c keeps the last key per digest): the MAC
-- stays right when the key repeats, changes to one of the same length, and comes back.
function T.hmac_key_reused_and_changed()
  local jefe = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
  local msg = "what do ya want for nothing?"
  eq(crypto.hmac("sha256", "Jefe", msg), jefe, "first")
  eq(crypto.hmac("sha256", "Jefe", msg), jefe, "same key again")
  local other = crypto.hmac("sha256", "Jeff", msg)
  assert(other ~= jefe, "a key of the same length, one byte apart, gives another MAC")
  eq(crypto.hmac("sha256", "Jefe", "Hi There"), crypto.hmac("sha256", "Jefe", "Hi There"), "other data")
  eq(crypto.hmac("sha256", "Jefe", msg), jefe, "the first key back")
  eq(crypto.hmac("sha256", "", ""), "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad",
     "then the empty key")
  eq(crypto.hmac("sha256", "Jefe", msg), jefe, "and back again")
end

function T.hmac_sha512_rfc4231()
  eq(crypto.hmac("sha512", ("\x0b"):rep(20), "Hi There"),
     "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde"
     .. "daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854", "case 1")
  eq(crypto.hmac("sha512", "Jefe", "what do ya want for nothing?"),
     "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
     .. "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737", "case 2")
end

-- RFC 2202 test cases 1-4, 6 and 7.
function T.hmac_sha1_rfc2202()
  local k25 = bytes(table.unpack((function() local t = {} for i = 1, 25 do t[i] = i end return t end)()))
  local big_key = ("\xaa"):rep(80)
  local cases = {
    { ("\x0b"):rep(20), "Hi There", "b617318655057264e28bc0b6fb378c8ef146be00" },
    { "Jefe", "what do ya want for nothing?", "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79" },
    { ("\xaa"):rep(20), ("\xdd"):rep(50), "125d7342b9ac11cd91a39af48aa17b4f63f175d3" },
    { k25, ("\xcd"):rep(50), "4c9007f4026250c6bc8414f9bf50c86c2d7235da" },
    { big_key, "Test Using Larger Than Block-Size Key - Hash Key First",
      "aa4ae5e15272d00e95705637ce8a3b55ed402112" },
    { big_key, "Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data",
      "e8e99d0f45237d786d6bbaa7965c7808bbff1a91" },
  }
  for i, c in ipairs(cases) do
    eq(crypto.hmac("sha1", c[1], c[2]), c[3], "case " .. i)
  end
end

function T.hmac_encodings()
  local raw = crypto.hmac("sha256", "Jefe", "what do ya want for nothing?", "raw")
  eq(#raw, 32, "raw length")
  eq(raw:byte(1), 0x5b, "first raw byte")
  eq(raw:byte(32), 0x43, "last raw byte")
  eq(crypto.hmac("sha256", "Jefe", "what do ya want for nothing?", "base64"),
     crypto.base64_encode(raw), "base64 of the raw MAC")
  eq(crypto.hmac("sha256", "Jefe", "what do ya want for nothing?", "hex"),
     crypto.hmac("sha256", "Jefe", "what do ya want for nothing?"), "hex is the default")
end

-- Expected values: printf '%s' "$BODY" | openssl dgst -sha256 -hmac SECRET (and -sha1 -binary | base64).
local BODY = '{"event":"message_created","id":42,"content":"Hi agent"}'

function T.webhook_signatures()
  -- GitHub / Genesys X-Hub-Signature-256, Chatwoot, Sunshine: sha256 HMAC in hex
  local header = "sha256=82c2d41f8b195fcc10ffd0d2691ce6c4ab04860b80247f717dab1e168b708035"
  local mine = "sha256=" .. crypto.hmac("sha256", "whsec_test_secret", BODY)
  assert(crypto.compare(mine, header), "X-Hub-Signature-256 matches")
  assert(not crypto.compare("sha256=" .. crypto.hmac("sha256", "whsec_test_secret", BODY .. " "), header),
         "a changed body does not match")
  -- Twilio X-Twilio-Signature and LivePerson sha1=<base64>: HMAC-SHA1 in base64
  eq(crypto.hmac("sha1", "twilio_auth_token", BODY, "base64"), "E2Ue+IUM6Th/zpIIUROeJFDtKWc=", "twilio")
  assert(crypto.compare("sha1=" .. crypto.hmac("sha1", "twilio_auth_token", BODY, "base64"),
                        "sha1=E2Ue+IUM6Th/zpIIUROeJFDtKWc="), "liveperson")
end

function T.digests()
  eq(crypto.sha256("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "sha256 abc")
  eq(crypto.sha256(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "sha256 empty")
  eq(crypto.sha1("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d", "sha1 abc")
  eq(crypto.sha256("abc", "base64"), "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=", "sha256 base64")
  eq(#crypto.sha1("abc", "raw"), 20, "sha1 raw length")
  assert(crypto.sha256("a\0b") ~= crypto.sha256("a"), "data is not cut at NUL")
end

-- RFC 4648 section 10.
function T.base64_rfc4648()
  local vectors = { { "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
                    { "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" } }
  for _, v in ipairs(vectors) do
    eq(crypto.base64_encode(v[1]), v[2], "encode " .. v[1])
    eq(crypto.base64_decode(v[2]), v[1], "decode " .. v[2])
    eq(crypto.base64url_encode(v[1]), (v[2]:gsub("=", "")), "url encode " .. v[1])
    eq(crypto.base64url_decode((v[2]:gsub("=", ""))), v[1], "url decode " .. v[2])
  end
end

function T.base64url_alphabet()
  eq(crypto.base64_encode("\xfb\xff"), "+/8=", "standard alphabet")
  eq(crypto.base64url_encode("\xfb\xff"), "-_8", "url alphabet, no padding")
  eq(crypto.base64url_decode("-_8"), "\xfb\xff", "url decode")
  -- a JWT header
  eq(crypto.base64url_decode("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"), '{"alg":"HS256","typ":"JWT"}', "jwt")
  local all = {}
  for i = 0, 255 do all[#all + 1] = string.char(i) end
  all = table.concat(all)
  eq(crypto.base64url_decode(crypto.base64url_encode(all)), all, "all bytes through url")
  eq(crypto.base64_decode(crypto.base64_encode(all)), all, "all bytes through standard")
end

-- Inputs longer than one internal chunk: base64 of a whole is the concatenation of the
-- base64 of its 3-byte-aligned parts, so the parts check the chunk joins.
function T.base64_long_input()
  local parts = {}
  for i = 1, 3500 do parts[i] = string.char(i % 256, (i * 7) % 256, (i * 13) % 256) end
  local whole = table.concat(parts) .. "xy"
  local encoded = {}
  for i, p in ipairs(parts) do encoded[i] = crypto.base64_encode(p) end
  encoded[#encoded + 1] = crypto.base64_encode("xy")
  eq(crypto.base64_encode(whole), table.concat(encoded), "long encode")
  eq(crypto.base64_decode(crypto.base64_encode(whole)), whole, "long round trip")
  eq(crypto.base64url_decode(crypto.base64url_encode(whole)), whole, "long url round trip")
end

function T.base64_rejects_bad_input()
  for _, s in ipairs({ "Zg=", "Zg", "Z===", "=Zg=", "Zg==Zg==", "Zm9v!", "Zm9v\n", " Zm9v", "Zm9v\0AAA",
                       "Zm-v", "Zm_v", "Zg=A" }) do
    local v, err = crypto.base64_decode(s)
    assert(v == nil and err == "invalid base64", ("standard %q: %s %s"):format(s, tostring(v), tostring(err)))
  end
  for _, s in ipairs({ "Zg==", "Zm8=", "Z", "Zm9vY", "+/8", "Zm9v\0" }) do
    local v, err = crypto.base64url_decode(s)
    assert(v == nil and err == "invalid base64", ("url %q: %s %s"):format(s, tostring(v), tostring(err)))
  end
end

function T.compare_is_plain_equality()
  assert(crypto.compare("", ""))
  assert(crypto.compare("abc", "abc"))
  assert(not crypto.compare("abc", "abd"))
  assert(not crypto.compare("abc", "ab"))
  assert(not crypto.compare("ab", "abc"))
  assert(not crypto.compare("", "a"))
  assert(crypto.compare("a\0b", "a\0b"))
  assert(not crypto.compare("a\0b", "a\0c"))
end

-- A 2048-bit key made once with `openssl genpkey -algorithm RSA`; the signatures are
-- `openssl dgst -sha256 -sign` (and -sha1) over MSG, base64 encoded.
local PUB_SPKI = [[
-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAx/HhfMX56wKdABDS+o5Y
EEt8bkfpCYXl0/GiN2aS4jZqlP2wl+rgMOWE4LcW2YYoxQpI2xIz+PKu72XDzA80
vK+HMxhSgpL368sjOjFFixDg3zxha0CZ4ygmda7Tnjye3fa+JXVbHRtzfoxU6ZzY
T+2lLAqJFNKqrg8TRnYh7WSEbOCqLFtoP2YwGjbiXm0nwPJq3aJSbTQmx1tqfP03
h2eBjPZHWi5emqnQr2j0IInniGLfXgJjePOvO8WR4Z8KC8qDNU/hGDQ9xY40nqfZ
0xbQefM2KDalX3kEDcBrw6xQr4I5NC3hv6qMovfcdhgEs5zSST2pnm4sBYHtTAcb
2QIDAQAB
-----END PUBLIC KEY-----
]]
local PUB_PKCS1 = [[
-----BEGIN RSA PUBLIC KEY-----
MIIBCgKCAQEAx/HhfMX56wKdABDS+o5YEEt8bkfpCYXl0/GiN2aS4jZqlP2wl+rg
MOWE4LcW2YYoxQpI2xIz+PKu72XDzA80vK+HMxhSgpL368sjOjFFixDg3zxha0CZ
4ygmda7Tnjye3fa+JXVbHRtzfoxU6ZzYT+2lLAqJFNKqrg8TRnYh7WSEbOCqLFto
P2YwGjbiXm0nwPJq3aJSbTQmx1tqfP03h2eBjPZHWi5emqnQr2j0IInniGLfXgJj
ePOvO8WR4Z8KC8qDNU/hGDQ9xY40nqfZ0xbQefM2KDalX3kEDcBrw6xQr4I5NC3h
v6qMovfcdhgEs5zSST2pnm4sBYHtTAcb2QIDAQAB
-----END RSA PUBLIC KEY-----
]]
local EC_PUB = [[
-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE0JXpxIBcTMtI56QcFHglSf+hz02b
9FrWiS4Yf1tFiARBluosCCD3XWbBY5xx3JGfxUNrUKTUSiKbGtVXUhWc4A==
-----END PUBLIC KEY-----
]]
local MSG = '{"actor":{"actor_type":"agent"},"action":"message_create","data":{"message":{"id":"m-1"}}}'
local SIG_SHA256 = "gcBdPDFNI4+bck/YwyUEyMwULFBYgvHHvXIGQfqUePU1rFmlJM5ew9xqoQzqYp57iTAJzROvLeMfPMw8pj5oXL5M"
  .. "iJG+7StFOq95Rd9uiUmySULOdJS14RfDmW3M8uTMg6nRJ5HepJpSWQEHx1mmkhdaIOKXpJ3PeJdh+6vNt9LXGjvJJR29PV+bsN"
  .. "NbvhIiHaPFN8jhgQy4eLTMsnowJddkiwNYy6+ZIGi4eIFjqG7t7QQfSiH48/UGwXu4UjIF9/y777Hk7lOaarTpCORRgxX1Tnjd"
  .. "tc3mawv6Rdkq/SOhMgzfeMoGEtCJEqKb9T+kLlkk+029RsrVyP5FhU0gWg=="
local SIG_SHA1 = "KIW1cRucx+UDbSWekIeU73H+/qgEZLEhukfLFVWLDTK0uJiw+VnIP1eVIOkCJBfjr+moCMZ4FpKpig2asGUA1IZpHf5K"
  .. "RmWtigwxCOoSxTlJBgwwmW1BiE298Wc9I/A8Ro0De4JmfyXK+YaQNZsR/B9V9PB0s7MNACw95kx1039aJXbLRGjmdN7NY9DVtu"
  .. "GwkvDhLrLYyHxHCtwco//yPMLtefuOLh+6FfnlaDSlB7AVKN91o62nSSpcMTjCXmSQXta7HIF+ZpZzqCPIM73Cvgv+f4t7kIbj"
  .. "dnbUxibzN6lVnanRZYUuPNC3q4VHjoFDR/soVOSNMkH64SzsLFnjqA=="

-- Freshchat's X-Freshchat-Signature: base64 RSA-SHA256 over the body.
function T.rsa_verify_accepts_a_good_signature()
  local sig = assert(crypto.base64_decode(SIG_SHA256))
  eq(crypto.rsa_verify(PUB_SPKI, MSG, sig), true, "SubjectPublicKeyInfo key")
  eq(crypto.rsa_verify(PUB_PKCS1, MSG, sig), true, "PKCS#1 key")
  eq(crypto.rsa_verify(PUB_SPKI, MSG, sig, "sha256"), true, "explicit sha256")
  eq(crypto.rsa_verify(PUB_SPKI, MSG, assert(crypto.base64_decode(SIG_SHA1)), "sha1"), true, "sha1")
end

function T.rsa_verify_rejects_a_bad_signature()
  local sig = assert(crypto.base64_decode(SIG_SHA256))
  eq(crypto.rsa_verify(PUB_SPKI, MSG .. " ", sig), false, "tampered message")
  eq(crypto.rsa_verify(PUB_SPKI, MSG:gsub("m%-1", "m-2"), sig), false, "changed id")
  local flipped = sig:sub(1, 100) .. string.char(sig:byte(101) ~ 1) .. sig:sub(102)
  eq(crypto.rsa_verify(PUB_SPKI, MSG, flipped), false, "flipped bit")
  eq(crypto.rsa_verify(PUB_SPKI, MSG, sig:sub(2)), false, "short signature")
  eq(crypto.rsa_verify(PUB_SPKI, MSG, ""), false, "empty signature")
  eq(crypto.rsa_verify(PUB_SPKI, MSG, sig, "sha1"), false, "wrong digest")
  -- a failed check leaves nothing behind: the next good one still passes
  eq(crypto.rsa_verify(PUB_SPKI, MSG, sig), true, "good after bad")
end

function T.rsa_verify_reports_a_bad_key()
  local sig = assert(crypto.base64_decode(SIG_SHA256))
  for what, pem in pairs({ garbage = "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n",
                           empty = "", ec = EC_PUB,
                           truncated = PUB_SPKI:sub(1, 200) .. "\n-----END PUBLIC KEY-----\n" }) do
    local ok, err = crypto.rsa_verify(pem, MSG, sig)
    assert(ok == nil and err == "invalid key", ("%s: %s %s"):format(what, tostring(ok), tostring(err)))
  end
end

function T.random_bytes()
  eq(#crypto.random(16, "raw"), 16, "raw length")
  eq(#crypto.random(0, "raw"), 0, "zero bytes")
  eq(#crypto.random(1024, "raw"), 1024, "the bound")
  local h = crypto.random(16)
  assert(h:match("^%x+$") and #h == 32, "hex by default: " .. h)
  assert(crypto.base64_decode(crypto.random(30, "base64")), "base64")
  assert(crypto.random(16) ~= crypto.random(16), "two draws differ")
end

function T.uuid_is_v4()
  local seen = {}
  for _ = 1, 100 do
    local u = crypto.uuid()
    assert(u:match("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"), u)
    assert(u == u:lower(), "lowercase")
    assert(not seen[u], "unique")
    seen[u] = true
  end
end

function T.misuse_raises()
  raises("bad argument #1 to '[%w.]-hmac' %(invalid option 'md5'%)", crypto.hmac, "md5", "k", "d")
  raises("bad argument #1 to '[%w.]-hmac'", crypto.hmac, nil, "k", "d")
  raises("bad argument #2 to '[%w.]-hmac' %(string expected, got table%)", crypto.hmac, "sha256", {}, "d")
  raises("bad argument #3 to '[%w.]-hmac' %(string expected, got no value%)", crypto.hmac, "sha256", "k")
  raises("bad argument #4 to '[%w.]-hmac' %(invalid option 'base32'%)", crypto.hmac, "sha256", "k", "d", "base32")
  raises("bad argument #2 to '[%w.]-sha256' %(invalid option 'HEX'%)", crypto.sha256, "abc", "HEX")
  raises("bad argument #1 to '[%w.]-sha1'", crypto.sha1, nil)
  raises("bad argument #1 to '[%w.]-base64_encode'", crypto.base64_encode, {})
  raises("bad argument #1 to '[%w.]-base64_decode'", crypto.base64_decode)
  raises("bad argument #1 to '[%w.]-base64url_decode'", crypto.base64url_decode, false)
  raises("bad argument #2 to '[%w.]-compare'", crypto.compare, "a", nil)
  raises("bad argument #4 to '[%w.]-rsa_verify' %(invalid option 'md5'%)", crypto.rsa_verify, PUB_SPKI, MSG, "s", "md5")
  raises("bad argument #3 to '[%w.]-rsa_verify'", crypto.rsa_verify, PUB_SPKI, MSG)
  raises("bad argument #1 to '[%w.]-random' %(must be 0..1024%)", crypto.random, 10 ^ 9)
  raises("bad argument #1 to '[%w.]-random' %(must be 0..1024%)", crypto.random, 1025)
  raises("bad argument #1 to '[%w.]-random' %(must be 0..1024%)", crypto.random, -1)
  raises("bad argument #1 to '[%w.]-random' %(number has no integer representation%)", crypto.random, 1.5)
  raises("bad argument #2 to '[%w.]-random' %(invalid option 'bin'%)", crypto.random, 4, "bin")
end

return T
