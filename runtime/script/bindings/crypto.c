/* bindings/crypto.c - the `handoff.crypto` module: HMAC, digests, base64, constant-time
 * comparison, RSA signature checks, random bytes and UUIDs, so hub scripts can sign
 * outbound webhooks and verify inbound ones. The cryptography is OpenSSL's (the EVP APIs
 * of OpenSSL 3); this file checks arguments, encodes results and turns failures into
 * nil, err. It keeps no keys of its own: scripts pass them in on every call (the reused
 * HMAC context below holds the last call's key until the next call, as the script does). */
#include "script/bindings/bindings.h"

#include <lauxlib.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdbool.h>
#include <string.h>

#define CRYPTO_RANDOM_MAX 1024	/* bytes per crypto.random call */
#define UUID_BATCH 16		/* UUIDs drawn per RAND_bytes call */
/* Base64 works in chunks so no length reaches OpenSSL's int parameters; both sizes are
 * whole groups (3 bytes in, 4 characters out), so chunks join without padding between. */
#define B64_ENCODE_CHUNK 3072
#define B64_DECODE_CHUNK 4096

enum encoding { ENC_HEX, ENC_BASE64, ENC_RAW };
enum digest { MD_SHA1, MD_SHA256, MD_SHA512 };

/* indexed by enum encoding and enum digest */
static const char *const encoding_names[] = { "hex", "base64", "raw", NULL };
static const char *const digest_names[] = { "sha1", "sha256", "sha512", NULL };
static const char *const digest_ossl_names[] = { "SHA1", "SHA256", "SHA512" };

static const char B64_STD[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char B64_URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int fail(lua_State *L, const char *reason)
{
	ERR_clear_error();	/* a stale error would mislead the next TLS call on this thread */
	luaL_pushfail(L);
	lua_pushstring(L, reason);
	return 2;
}

static void hex(char *out, const unsigned char *p, size_t n)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 0x0f];
	}
}

/* Replaces + and / by - and _ in the LEN characters at S and drops the padding;
 * returns the new length. */
static size_t to_url(char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		s[i] = s[i] == '+' ? '-' : s[i] == '/' ? '_' : s[i];
	while (len > 0 && s[len - 1] == '=')
		len--;
	return len;
}

static void push_base64(lua_State *L, const unsigned char *p, size_t n, int url)
{
	luaL_Buffer b;

	luaL_buffinit(L, &b);
	while (n > 0) {
		size_t chunk = n < B64_ENCODE_CHUNK ? n : B64_ENCODE_CHUNK;
		char *out = luaL_prepbuffsize(&b, B64_ENCODE_CHUNK / 3 * 4 + 1);
		size_t len = (size_t)EVP_EncodeBlock((unsigned char *)out, p, (int)chunk);

		luaL_addsize(&b, url ? to_url(out, len) : len);
		p += chunk;
		n -= chunk;
	}
	luaL_pushresult(&b);
}

/* Pushes the N bytes at P as ENC (hex, base64 or raw); returns 1 result. */
static int push_encoded(lua_State *L, const unsigned char *p, size_t n, int enc)
{
	luaL_Buffer b;

	if (enc == ENC_RAW) {
		lua_pushlstring(L, (const char *)p, n);
	} else if (enc == ENC_BASE64) {
		push_base64(L, p, n, 0);
	} else {
		hex(luaL_buffinitsize(L, &b, 2 * n), p, n);
		luaL_pushresultsize(&b, 2 * n);
	}
	return 1;
}

/* Length of the base64 digits at the start of S (LEN bytes), or -1 when S is not
 * strict base64: the standard form is padded with '=' to whole groups, the URL form
 * has no padding. */
static ptrdiff_t b64_digits(const char *s, size_t len, int url)
{
	size_t digits = strspn(s, url ? B64_URL : B64_STD);	/* Lua strings end in NUL */
	size_t pad = len - digits;

	if (digits % 4 == 1)
		return -1;
	if (url)
		return pad == 0 ? (ptrdiff_t)digits : -1;
	if (len % 4 != 0 || pad > 2 || (pad == 2 && s[len - 2] != '=') || (pad && s[len - 1] != '='))
		return -1;
	return (ptrdiff_t)digits;
}

/* Decodes N (checked) base64 digits at S into B, one chunk at a time, each copied to
 * the standard alphabet and padded so EVP_DecodeBlock sees whole groups. */
static int b64_decode(luaL_Buffer *b, const char *s, size_t n, int url)
{
	char group[B64_DECODE_CHUNK];

	while (n > 0) {
		size_t chunk = n < B64_DECODE_CHUNK ? n : B64_DECODE_CHUNK;
		size_t pad = (4 - chunk % 4) % 4;
		unsigned char *out = (unsigned char *)luaL_prepbuffsize(b, B64_DECODE_CHUNK / 4 * 3);
		int len;

		for (size_t i = 0; i < chunk; i++)
			group[i] = !url ? s[i] : s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
		memset(group + chunk, '=', pad);
		len = EVP_DecodeBlock(out, (const unsigned char *)group, (int)(chunk + pad));
		if (len < (int)pad)
			return -1;
		luaL_addsize(b, (size_t)len - pad);	/* EVP counts the padding as zero bytes */
		s += chunk;
		n -= chunk;
	}
	return 0;
}

static int decode_base64(lua_State *L, int url)
{
	size_t len;
	const char *s = luaL_checklstring(L, 1, &len);
	ptrdiff_t digits = b64_digits(s, len, url);
	luaL_Buffer b;

	if (digits < 0)
		return fail(L, "invalid base64");
	luaL_buffinit(L, &b);
	if (b64_decode(&b, s, (size_t)digits, url) < 0)
		return fail(L, "invalid base64");
	luaL_pushresult(&b);
	return 1;
}

static int encode_base64(lua_State *L, int url)
{
	size_t len;
	const char *s = luaL_checklstring(L, 1, &len);

	push_base64(L, (const unsigned char *)s, len, url);
	return 1;
}

static int l_crypto_base64_encode(lua_State *L) { return encode_base64(L, 0); }
static int l_crypto_base64_decode(lua_State *L) { return decode_base64(L, 0); }
static int l_crypto_base64url_encode(lua_State *L) { return encode_base64(L, 1); }
static int l_crypto_base64url_decode(lua_State *L) { return decode_base64(L, 1); }

/* One HMAC context per digest, made once and re-keyed by every call: EVP_Q_mac fetches
 * the algorithms by name and builds a context each time, which cost three times the MAC
 * itself on a webhook's signature (the daemon is one thread, so one context suffices). */
static EVP_MAC_CTX *hmac_ctx[sizeof(digest_ossl_names) / sizeof(digest_ossl_names[0])];

static EVP_MAC_CTX *hmac_context(int alg)
{
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)digest_ossl_names[alg], 0),
		OSSL_PARAM_construct_end(),
	};
	EVP_MAC *mac;

	if (hmac_ctx[alg])
		return hmac_ctx[alg];
	mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	hmac_ctx[alg] = mac ? EVP_MAC_CTX_new(mac) : NULL;
	EVP_MAC_free(mac);	/* the context holds its own reference */
	if (hmac_ctx[alg] && !EVP_MAC_CTX_set_params(hmac_ctx[alg], params)) {
		EVP_MAC_CTX_free(hmac_ctx[alg]);
		hmac_ctx[alg] = NULL;
	}
	return hmac_ctx[alg];
}

/* The key each context holds: a hub signs and checks with one secret, and keying costs
 * two digest blocks and three digest-state copies per call (about a third of a webhook's
 * MAC). A call with the same key re-initialises the context without re-keying it. */
#define HMAC_KEY_CACHE_MAX 128
static struct {
	unsigned char key[HMAC_KEY_CACHE_MAX];
	size_t len;	/* 0: none cached */
} hmac_key[sizeof(digest_ossl_names) / sizeof(digest_ossl_names[0])];

static int hmac_init(EVP_MAC_CTX *ctx, int alg, const char *key, size_t klen)
{
	bool same = klen > 0 && klen == hmac_key[alg].len && CRYPTO_memcmp(hmac_key[alg].key, key, klen) == 0;

	if (same)
		return EVP_MAC_init(ctx, NULL, 0, NULL);
	hmac_key[alg].len = 0;
	/* KEY is never NULL (a Lua string), so an empty key is set, not "keep the last one". */
	if (!EVP_MAC_init(ctx, (const unsigned char *)key, klen, NULL))
		return 0;
	if (klen <= HMAC_KEY_CACHE_MAX) {
		memcpy(hmac_key[alg].key, key, klen);
		hmac_key[alg].len = klen;
	}
	return 1;
}

/* crypto.hmac(alg, key, data [, enc]) */
static int l_crypto_hmac(lua_State *L)
{
	int alg = luaL_checkoption(L, 1, NULL, digest_names);
	size_t klen, dlen, mlen = 0;
	const char *key = luaL_checklstring(L, 2, &klen);
	const char *data = luaL_checklstring(L, 3, &dlen);
	int enc = luaL_checkoption(L, 4, "hex", encoding_names);
	unsigned char mac[EVP_MAX_MD_SIZE];
	EVP_MAC_CTX *ctx = hmac_context(alg);

	if (!ctx || !hmac_init(ctx, alg, key, klen) ||
	    !EVP_MAC_update(ctx, (const unsigned char *)data, dlen) ||
	    !EVP_MAC_final(ctx, mac, &mlen, sizeof(mac)))
		return fail(L, "hmac failed");
	return push_encoded(L, mac, mlen, enc);
}

static int digest(lua_State *L, int alg)
{
	size_t dlen, mlen = 0;
	const char *data = luaL_checklstring(L, 1, &dlen);
	int enc = luaL_checkoption(L, 2, "hex", encoding_names);
	unsigned char md[EVP_MAX_MD_SIZE];

	if (!EVP_Q_digest(NULL, digest_ossl_names[alg], NULL, data, dlen, md, &mlen))
		return fail(L, "digest failed");
	return push_encoded(L, md, mlen, enc);
}

static int l_crypto_sha1(lua_State *L) { return digest(L, MD_SHA1); }
static int l_crypto_sha256(lua_State *L) { return digest(L, MD_SHA256); }

/* crypto.compare(a, b): the time taken depends on the length of A only, never on where
 * the strings differ. */
static int l_crypto_compare(lua_State *L)
{
	size_t la, lb;
	const char *a = luaL_checklstring(L, 1, &la);
	const char *b = luaL_checklstring(L, 2, &lb);
	int same_len = la == lb;

	/* with different lengths, A is compared with itself so the work stays the same */
	int same = CRYPTO_memcmp(a, same_len ? b : a, la) == 0;

	lua_pushboolean(L, same_len & same);
	return 1;
}

/* Reads an RSA public key from PEM text, as "PUBLIC KEY" (SubjectPublicKeyInfo) or
 * "RSA PUBLIC KEY" (PKCS#1); NULL when the text holds no such key. */
static EVP_PKEY *read_rsa_public_key(const char *pem, size_t len)
{
	EVP_PKEY *pkey = NULL;
	const unsigned char *p = (const unsigned char *)pem;
	OSSL_DECODER_CTX *dctx = OSSL_DECODER_CTX_new_for_pkey(&pkey, "PEM", NULL, "RSA",
								EVP_PKEY_PUBLIC_KEY, NULL, NULL);

	if (dctx && !OSSL_DECODER_from_data(dctx, &p, &len)) {
		EVP_PKEY_free(pkey);
		pkey = NULL;
	}
	OSSL_DECODER_CTX_free(dctx);
	return pkey;
}

/* Checks SIG over DATA with PKEY and the digest ALG: 1 valid, 0 not, -1 when OpenSSL
 * could not start the check. */
static int verify(EVP_PKEY *pkey, int alg, const char *data, size_t dlen, const char *sig,
		  size_t slen)
{
	EVP_MD_CTX *mctx = EVP_MD_CTX_new();
	int rc = -1;

	if (mctx && EVP_DigestVerifyInit_ex(mctx, NULL, digest_ossl_names[alg], NULL, NULL,
					    pkey, NULL) == 1)
		rc = EVP_DigestVerify(mctx, (const unsigned char *)sig, slen,
				      (const unsigned char *)data, dlen) == 1;
	EVP_MD_CTX_free(mctx);
	return rc;
}

/* crypto.rsa_verify(pem_public_key, data, signature [, alg]): PKCS#1 v1.5 signatures. */
static int l_crypto_rsa_verify(lua_State *L)
{
	size_t klen, dlen, slen;
	const char *pem = luaL_checklstring(L, 1, &klen);
	const char *data = luaL_checklstring(L, 2, &dlen);
	const char *sig = luaL_checklstring(L, 3, &slen);
	int alg = luaL_checkoption(L, 4, "sha256", digest_names);
	EVP_PKEY *pkey = read_rsa_public_key(pem, klen);
	int rc;

	if (!pkey)
		return fail(L, "invalid key");
	rc = verify(pkey, alg, data, dlen, sig, slen);
	EVP_PKEY_free(pkey);
	if (rc < 0)
		return fail(L, "verify failed");
	ERR_clear_error();	/* a malformed signature leaves a reason on the queue */
	lua_pushboolean(L, rc);
	return 1;
}

/* crypto.random(n [, enc]) */
static int l_crypto_random(lua_State *L)
{
	lua_Integer n = luaL_checkinteger(L, 1);
	int enc = luaL_checkoption(L, 2, "hex", encoding_names);
	unsigned char buf[CRYPTO_RANDOM_MAX];

	if (n < 0 || n > CRYPTO_RANDOM_MAX)
		return luaL_argerror(L, 1, lua_pushfstring(L, "must be 0..%d", CRYPTO_RANDOM_MAX));
	if (RAND_bytes(buf, (int)n) != 1)
		return fail(L, "no randomness");
	return push_encoded(L, buf, (size_t)n, enc);
}

/* The random bytes of the next UUIDs. A UUID names a delivery and guards nothing, so
 * its randomness is drawn in batches: each RAND_bytes call takes the DRBG's lock and a
 * getpid(), and hub scripts make one UUID per request they send. */
static unsigned char uuid_bytes[UUID_BATCH * 16];
static size_t uuid_left;

/* crypto.uuid(): a random (version 4, RFC 9562) UUID in lowercase 8-4-4-4-12 form. */
static int l_crypto_uuid(lua_State *L)
{
	static const unsigned char groups[] = { 4, 2, 2, 2, 6 };
	unsigned char b[16];
	char out[36], *o = out;
	const unsigned char *p = b;

	if (uuid_left == 0) {
		if (RAND_bytes(uuid_bytes, sizeof(uuid_bytes)) != 1)
			return fail(L, "no randomness");
		uuid_left = sizeof(uuid_bytes);
	}
	memcpy(b, uuid_bytes + sizeof(uuid_bytes) - uuid_left, sizeof(b));
	uuid_left -= sizeof(b);
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);	/* version 4 */
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);	/* variant 10 */
	for (size_t g = 0; g < sizeof(groups); g++) {
		if (g > 0)
			*o++ = '-';
		hex(o, p, groups[g]);
		o += 2 * groups[g];
		p += groups[g];
	}
	lua_pushlstring(L, out, sizeof(out));
	return 1;
}

static const luaL_Reg crypto_funcs[] = {
	{ "base64_decode", l_crypto_base64_decode },
	{ "base64_encode", l_crypto_base64_encode },
	{ "base64url_decode", l_crypto_base64url_decode },
	{ "base64url_encode", l_crypto_base64url_encode },
	{ "compare", l_crypto_compare },
	{ "hmac", l_crypto_hmac },
	{ "random", l_crypto_random },
	{ "rsa_verify", l_crypto_rsa_verify },
	{ "sha1", l_crypto_sha1 },
	{ "sha256", l_crypto_sha256 },
	{ "uuid", l_crypto_uuid },
	{ NULL, NULL },
};

int luaopen_handoff_crypto(lua_State *L)
{
	luaL_newlib(L, crypto_funcs);
	return 1;
}
