/*
 * chan_msg.c: the channel's frames and messages, with no I/O and no state,
 * so the fuzz target runs exactly the code a connection runs on its input.
 *
 * The frame is wire.h's; only its CRC32C is computed here, with the SSE4.2
 * instruction on three interleaved lanes where the CPU has it: the
 * table-driven wire_crc32c() runs at ~370 MB/s, slower than AES-GCM, and
 * would otherwise cap bulk streams. Same polynomial, same bytes on the wire
 * (a unit test holds the two implementations to each other).
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "proto/chan_priv.h"

uint64_t chan_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- CRC32C ---- */

#if defined(__x86_64__)
#include <nmmintrin.h>

#define HW_CRC __attribute__((target("sse4.2")))
#define LANE_LONG 8192u
#define LANE_SHORT 256u

static bool hw_ok;
/* Append LANE_* zero bytes to a CRC register: linear, so a byte table each. */
static uint32_t shift_long[4][256], shift_short[4][256];

static uint64_t load64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

HW_CRC static uint32_t zeros_hw(uint32_t crc, size_t n)
{
	uint64_t c = crc;

	for (size_t i = 0; i < n / 8; i++)
		c = _mm_crc32_u64(c, 0);
	return (uint32_t)c;
}

static void shift_table_init(uint32_t tab[4][256], size_t n)
{
	uint32_t col[32];

	for (int i = 0; i < 32; i++)
		col[i] = zeros_hw(1u << i, n);
	for (int k = 0; k < 4; k++) {
		for (unsigned b = 0; b < 256; b++) {
			uint32_t v = 0;

			for (int j = 0; j < 8; j++)
				if (b & (1u << j))
					v ^= col[8 * k + j];
			tab[k][b] = v;
		}
	}
}

static uint32_t shift(const uint32_t tab[4][256], uint32_t c)
{
	return tab[0][c & 0xff] ^ tab[1][(c >> 8) & 0xff] ^ tab[2][(c >> 16) & 0xff] ^
	       tab[3][c >> 24];
}

static void crc_init(void)
{
	__builtin_cpu_init();
	hw_ok = __builtin_cpu_supports("sse4.2");
	if (!hw_ok)
		return;
	shift_table_init(shift_long, LANE_LONG);
	shift_table_init(shift_short, LANE_SHORT);
}

/* Three lanes of @lane bytes at once: the instruction's latency is 3 cycles. */
HW_CRC static uint64_t crc_lanes(uint64_t c0, const uint8_t **pp, size_t *np, size_t lane,
				 const uint32_t tab[4][256])
{
	const uint8_t *p = *pp;
	size_t n = *np;

	while (n >= 3 * lane) {
		uint64_t c1 = 0, c2 = 0;
		const uint8_t *end = p + lane;

		for (; p < end; p += 8) {
			c0 = _mm_crc32_u64(c0, load64(p));
			c1 = _mm_crc32_u64(c1, load64(p + lane));
			c2 = _mm_crc32_u64(c2, load64(p + 2 * lane));
		}
		c0 = shift(tab, (uint32_t)c0) ^ (uint32_t)c1;
		c0 = shift(tab, (uint32_t)c0) ^ (uint32_t)c2;
		p += 2 * lane;
		n -= 3 * lane;
	}
	*pp = p;
	*np = n;
	return c0;
}

HW_CRC static uint32_t crc_hw(const uint8_t *p, size_t n)
{
	uint64_t c = 0xFFFFFFFFu;

	c = crc_lanes(c, &p, &n, LANE_LONG, shift_long);
	c = crc_lanes(c, &p, &n, LANE_SHORT, shift_short);
	for (; n >= 8; p += 8, n -= 8)
		c = _mm_crc32_u64(c, load64(p));
	while (n--)
		c = _mm_crc32_u8((uint32_t)c, *p++);
	return (uint32_t)c ^ 0xFFFFFFFFu;
}

uint32_t chan_crc32c(const void *buf, size_t len)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, crc_init);
	return hw_ok ? crc_hw(buf, len) : wire_crc32c(buf, len);
}
#else
uint32_t chan_crc32c(const void *buf, size_t len)
{
	return wire_crc32c(buf, len);
}
#endif

/* ---- frames ---- */

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

size_t chan_msg_frame_size(const Hca__ChanMsg *m, size_t *plen)
{
	*plen = protobuf_c_message_get_packed_size(&m->base);
	return WIRE_HDR_LEN + *plen;
}

/* wire_hdr_encode()'s layout, with our CRC (see the top of the file). */
void chan_msg_frame_put(uint8_t *out, const Hca__ChanMsg *m, size_t plen)
{
	uint8_t *payload = out + WIRE_HDR_LEN;

	protobuf_c_message_pack(&m->base, payload);
	put32(out, WIRE_MAGIC);
	put16(out + 4, WIRE_VERSION);
	put16(out + 6, WIRE_T_CHAN);
	put32(out + 8, (uint32_t)plen);
	put32(out + 12, chan_crc32c(payload, plen));
}

int chan_frame_parse(const uint8_t *buf, size_t avail, size_t max_payload, struct chan_frame *f,
		     const char **why)
{
	int rc = wire_hdr_decode(buf, avail, max_payload, &f->h);

	f->total = 0;
	f->payload = NULL;
	*why = wire_strerror(rc);
	if (rc < 0)
		return rc;
	f->total = WIRE_HDR_LEN + (size_t)f->h.len;
	if (avail < f->total)
		return -EAGAIN;
	if (chan_crc32c(buf + WIRE_HDR_LEN, f->h.len) != f->h.crc) {
		*why = wire_strerror(-EILSEQ);
		return -EILSEQ;
	}
	if (f->h.type != WIRE_T_CHAN) {
		*why = "a frame of another protocol";
		return -EPROTO;
	}
	f->payload = buf + WIRE_HDR_LEN;
	return 0;
}

/* ---- messages ---- */

/* Printable ASCII without spaces: it goes into logs and lookups. */
bool chan_method_valid(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (n == 0 || n > CHAN_METHOD_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] <= ' ' || s[i] > '~')
			return false;
	return true;
}

/* Linux errno values are below 4096 (MAX_ERRNO); 0 is not an error. */
static bool error_valid(const Hca__ChanError *e)
{
	return !e || (e->code > 0 && e->code < 4096);
}

static bool msg_valid(const Hca__ChanMsg *m, const char **why)
{
	*why = "field out of range";
	switch (m->kind_case) {
	case HCA__CHAN_MSG__KIND_REQUEST:
		*why = "bad method name";
		return m->request && chan_method_valid(m->request->method);
	case HCA__CHAN_MSG__KIND_REPLY:
		return m->reply && error_valid(m->reply->error);
	case HCA__CHAN_MSG__KIND_PING:
		return m->ping != NULL;
	case HCA__CHAN_MSG__KIND_STREAM_OPEN:
		*why = "bad method name";
		return m->stream_open && chan_method_valid(m->stream_open->method);
	case HCA__CHAN_MSG__KIND_STREAM_DATA:
		return m->stream_data != NULL;
	case HCA__CHAN_MSG__KIND_STREAM_CREDIT:
		return m->stream_credit != NULL;
	case HCA__CHAN_MSG__KIND_STREAM_END:
		return m->stream_end && error_valid(m->stream_end->error);
	default:
		*why = "unknown message kind";
		return false;
	}
}

Hca__ChanMsg *chan_msg_decode(const uint8_t *payload, size_t len, const char **why)
{
	Hca__ChanMsg *m = hca__chan_msg__unpack(NULL, len, payload);

	if (!m) {
		*why = "undecodable message";
		return NULL;
	}
	if (!msg_valid(m, why)) {
		hca__chan_msg__free_unpacked(m, NULL);
		return NULL;
	}
	return m;
}

/* A varint of at most @max bytes at *@p (before @end): its value, or false
 * if cut or longer. */
static bool varint(const uint8_t **p, const uint8_t *end, unsigned max, uint64_t *v)
{
	*v = 0;
	for (unsigned shift = 0; *p < end && shift < 7 * max && shift < 64; shift += 7) {
		uint8_t b = *(*p)++;

		*v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80))
			return true;
	}
	return false;
}

/* protobuf-c refuses a length prefix longer than 5 bytes ("unterminated
 * length prefix"), even an overlong encoding of a small length: so does
 * the in-place reader, or the two would disagree (the fuzz target found
 * 2a 80 80 80 80 80 80 00). */
#define LEN_MAX 5u

/*
 * The bytes are nearly all stream data, and protobuf-c would copy every
 * chunk out of the frame. So stream data in exactly the layout protobuf-c
 * writes it, ChanMsg field 5 { field 1 varint, field 2 bytes }, is read in
 * place; anything else returns false and takes chan_msg_decode(). The fuzz
 * target checks the two agree.
 */
bool chan_msg_data_peek(const uint8_t *p, size_t len, uint64_t *id, const uint8_t **data,
			size_t *dlen)
{
	const uint8_t *end = p + len;
	uint64_t n;

	*id = 0;
	*data = NULL;
	*dlen = 0;
	if (len < 2 || *p++ != 0x2a || !varint(&p, end, LEN_MAX, &n) ||
	    n != (uint64_t)(end - p))
		return false;
	if (p < end && *p == 0x08) {
		p++;
		if (!varint(&p, end, 10, id))
			return false;
	}
	if (p == end)
		return true; /* no data: proto3 leaves an empty field out */
	if (*p++ != 0x12 || !varint(&p, end, LEN_MAX, &n) || n != (uint64_t)(end - p))
		return false;
	*data = p;
	*dlen = (size_t)n;
	return true;
}

void chan_msg_free(Hca__ChanMsg *m)
{
	if (m)
		hca__chan_msg__free_unpacked(m, NULL);
}

void chan_line_copy(char *dst, size_t n, const char *src)
{
	size_t i;

	if (!n)
		return;
	for (i = 0; src && src[i] && i + 1 < n; i++)
		dst[i] = (unsigned char)src[i] < ' ' || src[i] == 0x7f ? ' ' : src[i];
	dst[i] = '\0';
}

int chan_msg_error_code(const Hca__ChanError *e)
{
	return e ? -(int)e->code : 0;
}
