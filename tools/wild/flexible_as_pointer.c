/* linuxpy 0.25.0 (linuxpy/usb/raw.py) mirrors C flexible array members as
 * pointers. The struct grows by a pointer (and its alignment), so the size
 * encoded in the ioctl request number is wrong and the kernel answers ENOTTY.
 * This program lays the structs out both ways and prints the request numbers.
 * The packed USB descriptors get a pointer where C has an array: their size
 * becomes the array's offset plus a pointer.
 * Build: cc -o flexible_as_pointer flexible_as_pointer.c && ./flexible_as_pointer
 * It exits 0 while the layouts differ, 1 once they agree.
 */

#define DESCRIPTOR(s, f) \
	printf("sizeof(struct %-34s C %2zu  linuxpy %2zu (%s a pointer)\n", #s ")", sizeof(struct s), \
	       offsetof(struct s, f) + sizeof(void *), #f)
#include <stdio.h>
#include <linux/ioctl.h>
#include <linux/usbdevice_fs.h>
#include <linux/usb/ch9.h>
#include <linux/usb/video.h>
#include <stddef.h>

/* struct usbdevfs_urb as linuxpy declares it: iso_frame_desc is a pointer */
struct linuxpy_usbdevfs_urb {
	unsigned char type, endpoint;
	int status;
	unsigned int flags;
	void *buffer;
	int buffer_length, actual_length, start_frame;
	union { int number_of_packets; unsigned int stream_id; };
	int error_count;
	unsigned int signr;
	void *usercontext;
	struct usbdevfs_iso_packet_desc *iso_frame_desc;
};

/* struct usbdevfs_streams as linuxpy declares it: eps is a pointer */
struct linuxpy_usbdevfs_streams {
	unsigned int num_streams, num_eps;
	unsigned char *eps;
};

int main(void)
{
	printf("sizeof(struct usbdevfs_urb)      C %zu  linuxpy %zu\n", sizeof(struct usbdevfs_urb),
	       sizeof(struct linuxpy_usbdevfs_urb));
	printf("USBDEVFS_SUBMITURB               C %#lx  linuxpy %#lx\n", (unsigned long)USBDEVFS_SUBMITURB,
	       (unsigned long)_IOR('U', 10, struct linuxpy_usbdevfs_urb));
	printf("sizeof(struct usbdevfs_streams)  C %zu  linuxpy %zu\n", sizeof(struct usbdevfs_streams),
	       sizeof(struct linuxpy_usbdevfs_streams));
	printf("USBDEVFS_ALLOC_STREAMS           C %#lx  linuxpy %#lx\n", (unsigned long)USBDEVFS_ALLOC_STREAMS,
	       (unsigned long)_IOR('U', 28, struct linuxpy_usbdevfs_streams));
	printf("USBDEVFS_FREE_STREAMS            C %#lx  linuxpy %#lx\n", (unsigned long)USBDEVFS_FREE_STREAMS,
	       (unsigned long)_IOR('U', 29, struct linuxpy_usbdevfs_streams));
	DESCRIPTOR(usb_string_descriptor, wData);
	DESCRIPTOR(usb_key_descriptor, bKeyData);
	DESCRIPTOR(usb_ssp_cap_descriptor, bmSublinkSpeedAttr);
	DESCRIPTOR(usb_pd_cap_provider_port_descriptor, wPowerDataObject);
	DESCRIPTOR(uvc_header_descriptor, baInterfaceNr);
	DESCRIPTOR(uvc_input_header_descriptor, bmaControls);
	DESCRIPTOR(uvc_output_header_descriptor, bmaControls);
	DESCRIPTOR(uvc_frame_uncompressed, dwFrameInterval);
	DESCRIPTOR(uvc_frame_mjpeg, dwFrameInterval);
	return sizeof(struct usbdevfs_urb) == sizeof(struct linuxpy_usbdevfs_urb);
}
