/* linuxpy 0.25.0 (linuxpy/midi/raw.py) mirrors the bitfield "unsigned locked:1"
 * of struct snd_seq_queue_info as a full unsigned int: C puts name right after
 * the bitfield's byte (offset 9), linuxpy 3 bytes later (offset 12), so queue
 * names are read and written off by three bytes. It also lacks midi_version
 * in struct snd_seq_client_info, so its reserved[] starts 4 bytes early.
 * Build: cc -o snd_seq snd_seq.c && ./snd_seq
 * It exits 0 while the layouts differ, 1 once they agree.
 */
#include <stddef.h>
#include <stdio.h>
#include <sound/asequencer.h>

struct linuxpy_snd_seq_queue_info {
	int queue, owner;
	unsigned int locked;
	char name[64];
	unsigned int flags;
	char reserved[60];
};

int main(void)
{
	printf("offsetof(struct snd_seq_queue_info, name)      C %zu  linuxpy %zu\n",
	       offsetof(struct snd_seq_queue_info, name), offsetof(struct linuxpy_snd_seq_queue_info, name));
	printf("offsetof(struct snd_seq_client_info, reserved) C %zu  linuxpy %d\n",
	       offsetof(struct snd_seq_client_info, reserved), 132);
	printf("sizeof(struct snd_seq_client_info.reserved)    C %zu  linuxpy %d\n",
	       sizeof(((struct snd_seq_client_info *)0)->reserved), 56);
	return offsetof(struct snd_seq_queue_info, name) == offsetof(struct linuxpy_snd_seq_queue_info, name);
}
