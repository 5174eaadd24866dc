#include "backoff.h"

uint64_t
backoff_restart_ms(unsigned recent_restarts, uint64_t max_ms)
{
	uint64_t d;

	if (recent_restarts == 0)
		return 0;
	if (recent_restarts > 40)
		return max_ms;
	d = (uint64_t)BACKOFF_RESTART_FIRST_MS << (recent_restarts - 1);
	return d < max_ms ? d : max_ms;
}

uint64_t
backoff_resync_ms(uint64_t base_ms, unsigned errors)
{
	unsigned shift = errors == 0 ? 0 : errors - 1;

	if (shift > 6)
		shift = 6;
	return base_ms << shift;
}
