/*
 * libFuzzer harness for the frame decoder: arbitrary bytes arrive on a
 * socket in arbitrary chunks.  The first input byte picks the chunk size,
 * the rest is the stream.  Every READY frame is unpacked as both envelope
 * kinds through the bounded allocator, as farmd and the worker do.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "admin.pb-c.h"
#include "frame.h"
#include "worker.pb-c.h"

#define FUZZ_MAX_FRAME (1u << 20)

static void
fuzz_unpack(const uint8_t *body, size_t len)
{
	struct frame_alloc fa;
	struct err e;
	ProtobufCMessage *m;

	m = frame_unpack(&farmd__admin_msg__descriptor, body, len, &fa, &e);
	if (m != NULL)
		protobuf_c_message_free_unpacked(m, &fa.pb);
	m = frame_unpack(&farmd__worker_msg__descriptor, body, len, &fa, &e);
	if (m != NULL)
		protobuf_c_message_free_unpacked(m, &fa.pb);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct frame_rd rd;
	struct err e;
	size_t chunk, off = 1;

	if (size < 1)
		return 0;
	chunk = (size_t)data[0] % 64 + 1;
	frame_rd_init(&rd, FUZZ_MAX_FRAME);
	while (off < size) {
		uint8_t *p;
		size_t n, take;
		int rc;

		frame_rd_space(&rd, &p, &n);
		take = size - off < chunk ? size - off : chunk;
		take = take < n ? take : n;
		memcpy(p, data + off, take);
		off += take;
		rc = frame_rd_commit(&rd, take, &e);
		if (rc == FRAME_ERROR)
			break;
		if (rc == FRAME_READY) {
			size_t len;
			uint8_t *body = frame_rd_take(&rd, &len, NULL, NULL);

			fuzz_unpack(body, len);
			free(body);
		}
	}
	frame_rd_reset(&rd);
	return 0;
}
