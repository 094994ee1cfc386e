/*
 * What the metadata writer and reader of src/image agree on: the XMP namespace
 * and the signature of a JPEG XMP segment.
 */
#ifndef PX_IMAGE_META_INTERNAL_H
#define PX_IMAGE_META_INTERNAL_H

#define PX_META_XMP_NS "urn:pixpipe:meta:1"
/* the APP1 signature of XMP, NUL included (it is part of the segment) */
#define PX_META_XMP_SIG "http://ns.adobe.com/xap/1.0/"
#define PX_META_XMP_SIG_LEN sizeof PX_META_XMP_SIG

#endif
