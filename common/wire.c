#include "wire.h"

#include <string.h>

static const char *const kind_names[WIRE_KIND_COUNT] = {
	[WIRE_KIND_ENCODE] = "encode",
	[WIRE_KIND_COMPILE] = "compile",
	[WIRE_KIND_EXECUTE] = "execute",
};

static const char *const fault_names[WIRE_FAULT_COUNT] = {
	[WIRE_FAULT_NONE] = "none",
	[WIRE_FAULT_HANG] = "hang",
	[WIRE_FAULT_CRASH] = "crash",
	[WIRE_FAULT_SYSCALL] = "syscall",
	[WIRE_FAULT_OVERSIZE] = "oversize",
	[WIRE_FAULT_GARBAGE] = "garbage",
	[WIRE_FAULT_SLOW] = "slow",
	[WIRE_FAULT_BADOFFSET] = "badoffset",
	[WIRE_FAULT_SCRIBBLE] = "scribble",
	[WIRE_FAULT_SCRIBBLE_FREE] = "scribble-free",
};

const char *const wire_sandbox_layers[WIRE_SANDBOX_LAYERS] = {
	"rlimits", "no_new_privs", "namespaces", "landlock", "seccomp",
};

static int
name_lookup(const char *const *names, int n, const char *name)
{
	for (int i = 0; i < n; i++)
		if (strcmp(names[i], name) == 0)
			return i;
	return -1;
}

const char *
wire_kind_name(enum wire_kind kind)
{
	return (unsigned)kind < WIRE_KIND_COUNT ? kind_names[kind] : "?";
}

int
wire_kind_parse(const char *name, enum wire_kind *out)
{
	int i = name_lookup(kind_names, WIRE_KIND_COUNT, name);

	if (i < 0)
		return -1;
	*out = (enum wire_kind)i;
	return 0;
}

const char *
wire_fault_name(enum wire_fault fault)
{
	return (unsigned)fault < WIRE_FAULT_COUNT ? fault_names[fault] : "?";
}

int
wire_fault_parse(const char *name, enum wire_fault *out)
{
	int i = name_lookup(fault_names, WIRE_FAULT_COUNT, name);

	if (i < 0)
		return -1;
	*out = (enum wire_fault)i;
	return 0;
}

int
wire_sandbox_layer_parse(const char *name)
{
	return name_lookup(wire_sandbox_layers, WIRE_SANDBOX_LAYERS, name);
}
