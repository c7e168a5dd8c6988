/* Every shape that kstructs check must handle, mirrored by right.py (correctly) and wrong.py (not). */
#ifndef CASES_H
#define CASES_H
#include <linux/types.h>
#include <linux/ioctl.h>

struct opaque_thing {
	int hidden;
};

struct with_arrays {
	__u32 words[4];
	char name[16];
	__s16 grid[2][3];
};

struct with_pointers {
	void *data;
	const char *label;
	int (*callback)(int);
	struct with_arrays *next;
};

struct packed_thing {
	__u8 tag;
	__u32 value;
} __attribute__((packed));

struct net_order {
	__be32 addr;
	__be16 port;
};

struct outer {
	__u32 kind;
	union {
		__u32 number;
		__u8 bytes[4];
	} u;
	struct {
		__u16 lo;
		__u16 hi;
	};
	struct with_arrays inner;
};

enum colour {
	COLOUR_RED = 1,
	COLOUR_GREEN = 2,
	COLOUR_BLUE = 4,
};

struct flags {
	unsigned int ready : 1;
	unsigned int mode : 3;
	signed int level : 4;
	unsigned int big : 28;
	__u8 after;
};

struct status {
	unsigned int on : 1;
	unsigned int rest : 31;
	__u32 code;
};

struct flexible {
	__u32 count;
	__u32 items[];
};

struct versioned {
	__u32 version;
	__u32 size;
	__u64 reserved[4];
};

#define CASES_MAX 16
#define CASES_IOCTL _IOWR('x', 1, struct with_arrays)

#endif
