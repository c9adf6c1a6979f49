/* The native twins of the writer's per-trace Python, for speed: AgentWriter.write cost ~10.8k
 * instructions for a single-span trace exported to the test agent, ~3.3k with them (callgrind;
 * see ddagent/writer/agent.py). Three parts:
 *
 * - encode_trace, the twin of encoding.encode_trace_python: one trace chunk as a msgpack array
 *   of v0.4 span maps, packed straight from the spans' attributes (below);
 * - SendBuffer and EncodedTraces, the twins of agent.PythonSendBuffer and PythonEncodedTraces:
 *   the writer's buffer of encoded traces, whose put() encodes a chunk and appends it in one call,
 *   and what the sender takes out of it;
 * - writer_write, the twin of AgentWriter.write (agent.python_write): put(), and a call back into
 *   the writer's Python only for put()'s unusual answers.
 *
 * The encoder exists for speed (callgrind, a single-span trace with two tags: building the span
 * maps and packing them with msgpack was ~20k instructions of the ~55k a traced span cost then,
 * this encoder ~4.9k, and ~3.4k since it stores its bytes in place), and it gives byte for byte
 * what the Python encoder gives: the same fields, the same smallest msgpack forms msgpack-python
 * picks (tests/writer/test_native_encoder.py compares the two on generated spans).
 *
 * It only handles what the Span API stores: exact str, int, float, bool, None, bytes, dict and
 * list values. On anything else (a subclass, an object, an int beyond 64 bits, a failing
 * attribute), it packs nothing and returns fallback(spans), the Python encoder, which converts
 * or rejects the value as its docstring says. No Python code runs while it packs a value, so the
 * dicts it walks cannot change under it; reading a duck-typed span's attribute may run a
 * property's code, which is why each span is held while it is read and the list's size checked.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#ifndef Py_T_OBJECT_EX /* Python < 3.12 */
#include <structmember.h>
#define Py_T_OBJECT_EX T_OBJECT_EX
#define Py_T_PYSSIZET T_PYSSIZET
#define Py_T_BOOL T_BOOL
#endif

/* Deeper values (a dict in a dict in meta ...) are left to the Python encoder. */
#define MAX_DEPTH 32
#define STACK_BYTES 2048

typedef struct {
    char *data;
    Py_ssize_t length;
    Py_ssize_t capacity;
    char stack[STACK_BYTES]; /* most chunks fit here: no allocation until the final bytes */
} Buffer;

/* Grows `buffer` to hold `more` bytes beyond its length; -1 with MemoryError set. */
static int
grow(Buffer *buffer, Py_ssize_t more)
{
    if (more > PY_SSIZE_T_MAX / 2 - buffer->length) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t needed = buffer->length + more;
    Py_ssize_t capacity = buffer->capacity * 2;
    if (capacity < needed) {
        capacity = needed;
    }
    char *data;
    if (buffer->data == buffer->stack) {
        data = PyMem_Malloc(capacity);
        if (data != NULL) {
            memcpy(data, buffer->stack, buffer->length);
        }
    }
    else {
        data = PyMem_Realloc(buffer->data, capacity);
    }
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    buffer->data = data;
    buffer->capacity = capacity;
    return 0;
}

/* Room for `more` bytes. Each put_* makes room once for all it writes, then stores its bytes
 * in place, where it used to copy each type byte, header and key with a memcpy call. */
static inline int
room(Buffer *buffer, Py_ssize_t more)
{
    return more <= buffer->capacity - buffer->length ? 0 : grow(buffer, more);
}

/* The writers below store where room was made. */
static inline void
byte(Buffer *buffer, unsigned char value)
{
    buffer->data[buffer->length++] = (char)value;
}

/* A type byte followed by `size` bytes of `value`, big-endian. */
static inline void
typed(Buffer *buffer, unsigned char type, uint64_t value, int size)
{
    char *out = buffer->data + buffer->length;
    out[0] = (char)type;
    for (int i = size; i > 0; i--) {
        out[i] = (char)(value & 0xff);
        value >>= 8;
    }
    buffer->length += 1 + size;
}

/* A header for str, bin, array or map: the fix form (if any) below `fix_limit`, then the 8- (if
 * any), 16- and 32-bit forms, in 5 bytes of room. -1 (no exception set) for a length msgpack
 * refuses. */
static inline int
header(Buffer *buffer, Py_ssize_t length, unsigned char fix, Py_ssize_t fix_limit,
       unsigned char type8, unsigned char type16, unsigned char type32)
{
    if (length < fix_limit) {
        byte(buffer, (unsigned char)(fix | length));
    }
    else if (type8 && length <= 0xff) {
        typed(buffer, type8, (uint64_t)length, 1);
    }
    else if (length <= 0xffff) {
        typed(buffer, type16, (uint64_t)length, 2);
    }
    else if ((uint64_t)length <= 0xffffffffULL) {
        typed(buffer, type32, (uint64_t)length, 4);
    }
    else {
        return -1;
    }
    return 0;
}

static inline int
put_byte(Buffer *buffer, unsigned char value)
{
    if (room(buffer, 1) < 0) {
        return -1;
    }
    byte(buffer, value);
    return 0;
}

static inline int
put_uint(Buffer *buffer, uint64_t value)
{
    if (room(buffer, 9) < 0) {
        return -1;
    }
    if (value < 0x80) {
        byte(buffer, (unsigned char)value);
    }
    else if (value <= 0xff) {
        typed(buffer, 0xcc, value, 1);
    }
    else if (value <= 0xffff) {
        typed(buffer, 0xcd, value, 2);
    }
    else if (value <= 0xffffffffULL) {
        typed(buffer, 0xce, value, 4);
    }
    else {
        typed(buffer, 0xcf, value, 8);
    }
    return 0;
}

static int
put_negative(Buffer *buffer, int64_t value)
{
    if (room(buffer, 9) < 0) {
        return -1;
    }
    if (value >= -32) {
        byte(buffer, (unsigned char)(int8_t)value);
    }
    else if (value >= INT8_MIN) {
        typed(buffer, 0xd0, (uint64_t)value, 1);
    }
    else if (value >= INT16_MIN) {
        typed(buffer, 0xd1, (uint64_t)value, 2);
    }
    else if (value >= INT32_MIN) {
        typed(buffer, 0xd2, (uint64_t)value, 4);
    }
    else {
        typed(buffer, 0xd3, (uint64_t)value, 8);
    }
    return 0;
}

static int
put_header(Buffer *buffer, Py_ssize_t length, unsigned char fix, Py_ssize_t fix_limit,
           unsigned char type8, unsigned char type16, unsigned char type32)
{
    if (room(buffer, 5) < 0) {
        return -1;
    }
    return header(buffer, length, fix, fix_limit, type8, type16, type32);
}

/* `size` bytes from `from`, as glibc's memcpy copies small sizes (two overlapping moves), but
 * without its call: most of a span's ~20 strings are shorter than 16 bytes (callgrind: ~100
 * instructions a span less). */
static inline void
copy(char *to, const char *from, Py_ssize_t size)
{
    if (size > 16) {
        memcpy(to, from, size);
    }
    else if (size >= 8) {
        memcpy(to, from, 8);
        memcpy(to + size - 8, from + size - 8, 8);
    }
    else if (size >= 4) {
        memcpy(to, from, 4);
        memcpy(to + size - 4, from + size - 4, 4);
    }
    else if (size > 0) {
        to[0] = from[0];
        to[size / 2] = from[size / 2];
        to[size - 1] = from[size - 1];
    }
}

/* A str or bin: its header, then `size` bytes. */
static int
put_raw(Buffer *buffer, const char *bytes, Py_ssize_t size, unsigned char fix,
        Py_ssize_t fix_limit, unsigned char type8, unsigned char type16, unsigned char type32)
{
    if (size > PY_SSIZE_T_MAX - 5 || room(buffer, 5 + size) < 0
        || header(buffer, size, fix, fix_limit, type8, type16, type32) < 0) {
        return -1;
    }
    copy(buffer->data + buffer->length, bytes, size);
    buffer->length += size;
    return 0;
}

static inline int
put_str(Buffer *buffer, PyObject *value)
{
    const char *utf8;
    Py_ssize_t size;
    if (PyUnicode_IS_COMPACT_ASCII(value)) {
        /* ASCII is its own UTF-8, right behind the object's header (PyUnicode_DATA's answer
         * for a compact ASCII string): no call. PyUnicode_AsUTF8AndSize for every string cost
         * ~1k instructions a usual span more (callgrind). */
        utf8 = (const char *)((PyASCIIObject *)value + 1);
        size = PyUnicode_GET_LENGTH(value);
    }
    else {
        utf8 = PyUnicode_AsUTF8AndSize(value, &size); /* fails on lone surrogates */
        if (utf8 == NULL) {
            return -1;
        }
    }
    return put_raw(buffer, utf8, size, 0xa0, 32, 0xd9, 0xda, 0xdb);
}

static inline int
put_int(Buffer *buffer, PyObject *value)
{
    int overflow;
    long long signed_value = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow == 0) {
        if (signed_value == -1 && PyErr_Occurred()) {
            return -1;
        }
        return signed_value >= 0 ? put_uint(buffer, (uint64_t)signed_value)
                                 : put_negative(buffer, signed_value);
    }
    if (overflow > 0 && _PyLong_NumBits(value) <= 64) {
        /* 2**63 and up (half the span ids): the mask is the value, and costs ~50 instructions
         * where PyLong_AsUnsignedLongLong cost ~220 (callgrind) */
        return put_uint(buffer, PyLong_AsUnsignedLongLongMask(value));
    }
    return -1; /* beyond 64 bits, or below -2**63 */
}

/* Whether an exact int is 0, without a call. */
static inline int
is_zero(PyObject *value)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyUnstable_Long_IsCompact((PyLongObject *)value)
        && PyUnstable_Long_CompactValue((PyLongObject *)value) == 0;
#else
    return Py_SIZE(value) == 0;
#endif
}

static int
put_float(Buffer *buffer, double value)
{
    if (room(buffer, 9) < 0) {
        return -1;
    }
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    typed(buffer, 0xcb, bits, 8);
    return 0;
}

static int put_value(Buffer *buffer, PyObject *value, int depth);

static int
put_dict(Buffer *buffer, PyObject *dict, int depth)
{
    if (put_header(buffer, PyDict_GET_SIZE(dict), 0x80, 16, 0, 0xde, 0xdf) < 0) {
        return -1;
    }
    Py_ssize_t position = 0;
    PyObject *key, *value;
    while (PyDict_Next(dict, &position, &key, &value)) {
        /* str keys and values (all of meta) without put_value's call (callgrind: ~360
         * instructions a usual span less) */
        if ((PyUnicode_CheckExact(key) ? put_str(buffer, key) : put_value(buffer, key, depth)) < 0
            || (PyUnicode_CheckExact(value) ? put_str(buffer, value)
                                            : put_value(buffer, value, depth)) < 0) {
            return -1;
        }
    }
    return 0;
}

static int
put_list(Buffer *buffer, PyObject *list, int depth)
{
    Py_ssize_t length = PyList_GET_SIZE(list);
    if (put_header(buffer, length, 0x90, 16, 0, 0xdc, 0xdd) < 0) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < length; i++) {
        if (put_value(buffer, PyList_GET_ITEM(list, i), depth) < 0) {
            return -1;
        }
    }
    return 0;
}

/* Any value msgpack-python packs with strict_types=True; -1 for anything else. The usual
 * types first: str (meta's keys and values, metrics' keys), then float (metrics' values). */
static int
put_value(Buffer *buffer, PyObject *value, int depth)
{
    if (PyUnicode_CheckExact(value)) {
        return put_str(buffer, value);
    }
    if (PyFloat_CheckExact(value)) {
        return put_float(buffer, PyFloat_AS_DOUBLE(value));
    }
    if (PyLong_CheckExact(value)) {
        return put_int(buffer, value);
    }
    if (value == Py_None) {
        return put_byte(buffer, 0xc0);
    }
    if (value == Py_True || value == Py_False) {
        return put_byte(buffer, value == Py_True ? 0xc3 : 0xc2);
    }
    if (depth >= MAX_DEPTH) {
        return -1;
    }
    if (PyDict_CheckExact(value)) {
        return put_dict(buffer, value, depth + 1);
    }
    if (PyList_CheckExact(value)) {
        return put_list(buffer, value, depth + 1);
    }
    if (PyBytes_CheckExact(value)) {
        return put_raw(buffer, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value), 0, 0, 0xc4,
                       0xc5, 0xc6);
    }
    return -1;
}

/* The span attributes read, in the order of the wire map's fields. */
enum {
    TRACE_ID, SPAN_ID, PARENT_ID, NAME, SERVICE, RESOURCE, SPAN_TYPE, START, DURATION, ERROR,
    META, METRICS, FIELD_COUNT
};
static const char *const attribute_names[FIELD_COUNT] = {
    "trace_id", "span_id", "parent_id", "name", "service", "resource", "span_type", "start_ns",
    "duration_ns", "error", "meta", "metrics",
};
/* Each wire key, as the fixstr msgpack makes of it, padded to 16 bytes: copied with one
 * fixed-size memcpy, two moves rather than a call (callgrind: ~180 instructions a span less). */
static const char packed_keys[FIELD_COUNT][16] = {
    "\xa8trace_id", "\xa7span_id", "\xa9parent_id", "\xa4name", "\xa7service", "\xa8resource",
    "\xa4type", "\xa5start", "\xa8""duration", "\xa5""error", "\xa4meta", "\xa7metrics",
};
static PyObject *attributes[FIELD_COUNT]; /* interned attribute names */

static inline int
put_key(Buffer *buffer, int field)
{
    if (room(buffer, 16) < 0) {
        return -1;
    }
    const char *key = packed_keys[field];
    memcpy(buffer->data + buffer->length, key, 16);
    buffer->length += 1 + (key[0] & 0x1f);
    return 0;
}

/* `value or ""` for service, resource and type: only None and str are handled here. */
static int
put_str_or_empty(Buffer *buffer, PyObject *value)
{
    if (value == Py_None) {
        return put_byte(buffer, 0xa0);
    }
    return PyUnicode_CheckExact(value) ? put_str(buffer, value) : -1;
}

static int
put_field(Buffer *buffer, int field, PyObject *value)
{
    if (put_key(buffer, field) < 0) {
        return -1;
    }
    switch (field) {
    case TRACE_ID: { /* its low 64 bits */
        if (!PyLong_CheckExact(value)) {
            return -1;
        }
        unsigned long long low = PyLong_AsUnsignedLongLongMask(value);
        if (low == (unsigned long long)-1 && PyErr_Occurred()) {
            return -1;
        }
        return put_uint(buffer, low);
    }
    case SPAN_ID: /* a zero span id is the Python encoder's to reject */
        if (!PyLong_CheckExact(value) || is_zero(value)) {
            return -1;
        }
        return put_int(buffer, value);
    case PARENT_ID: /* None for a root */
        if (value == Py_None) {
            return put_byte(buffer, 0x00);
        }
        return PyLong_CheckExact(value) ? put_int(buffer, value) : -1;
    case SERVICE:
    case RESOURCE:
    case SPAN_TYPE:
        return put_str_or_empty(buffer, value);
    default:
        return put_value(buffer, value, 0);
    }
}

/* Where a __slots__ class (ddagent's Span) keeps each field (span_layout), so that its spans'
 * fields are read straight from the object, as its slot descriptors would read them:
 * PyObject_GetAttr costs ~150 instructions a field (callgrind), ~1.8k of a span's ~4k to encode.
 * One class is remembered, with the version tag it had: assigning to the class (replacing a slot
 * by a property, say) changes the tag, and its spans are then read through PyObject_GetAttr until
 * the layout is learnt anew. */
typedef struct {
    PyTypeObject *type; /* a strong reference; NULL until a class qualifies */
    unsigned int version_tag;
    Py_ssize_t offsets[FIELD_COUNT];
} Layout;

static Layout span_layout;

static int
has_version_tag(PyTypeObject *type)
{
#if PY_VERSION_HEX >= 0x030C0000
    return type->tp_version_tag != 0; /* 3.12+ zero it when the type changes (the flag is unused) */
#else
    return PyType_HasFeature(type, Py_TPFLAGS_VALID_VERSION_TAG) && type->tp_version_tag != 0;
#endif
}

/* Remembers in `layout` where `type` keeps the attributes `names`, if every one is a plain
 * slot of it; 0 if one is not (or on an error). */
static int
learn_layout(Layout *layout, PyTypeObject *type, PyObject *const *names, int count)
{
    if (!has_version_tag(type)) {
        return 0;
    }
    Py_ssize_t offsets[FIELD_COUNT];
    for (int i = 0; i < count; i++) {
        /* The attribute as `type` resolves it (its MRO's first definition), borrowed; it runs
         * no Python code. (CPython's own lookup: the static builtin types in an MRO have no
         * tp_dict to read on 3.12+.) */
        PyObject *descriptor = _PyType_Lookup(type, names[i]);
        if (descriptor == NULL || Py_TYPE(descriptor) != &PyMemberDescr_Type) {
            return 0;
        }
        PyMemberDef *member = ((PyMemberDescrObject *)descriptor)->d_member;
        if (member->type != Py_T_OBJECT_EX) {
            return 0;
        }
        offsets[i] = member->offset;
    }
    Py_INCREF(type);
    Py_XSETREF(layout->type, type);
    layout->version_tag = type->tp_version_tag;
    memcpy(layout->offsets, offsets, count * sizeof offsets[0]);
    return 1;
}

/* Whether `layout` says where `type` keeps `names`, learning it if need be. */
static int
knows_layout(Layout *layout, PyTypeObject *type, PyObject *const *names, int count)
{
    if (type == layout->type && has_version_tag(type)
        && type->tp_version_tag == layout->version_tag) {
        return 1;
    }
    return learn_layout(layout, type, names, count);
}

static int
put_span(Buffer *buffer, PyObject *span)
{
    if (put_byte(buffer, 0x8c) < 0) { /* a map of FIELD_COUNT (12) entries */
        return -1;
    }
    if (knows_layout(&span_layout, Py_TYPE(span), attributes, FIELD_COUNT)) {
        for (int field = 0; field < FIELD_COUNT; field++) {
            PyObject *value = *(PyObject **)((char *)span + span_layout.offsets[field]);
            /* NULL: an unset slot, whose AttributeError the Python encoder raises */
            if (value == NULL || put_field(buffer, field, value) < 0) {
                return -1;
            }
        }
        return 0;
    }
    for (int field = 0; field < FIELD_COUNT; field++) {
        PyObject *value = PyObject_GetAttr(span, attributes[field]);
        if (value == NULL) {
            return -1;
        }
        int result = put_field(buffer, field, value);
        Py_DECREF(value);
        if (result < 0) {
            return -1;
        }
    }
    return 0;
}

/* Packs into `buffer`; -1 (an exception may be set) when the Python encoder must take over. */
static int
put_trace(Buffer *buffer, PyObject *spans)
{
    Py_ssize_t count = PyList_GET_SIZE(spans);
    if (put_header(buffer, count, 0x90, 16, 0, 0xdc, 0xdd) < 0) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        /* A span's attribute may be a property, whose code may change the list: the span is
         * held while it is read, and a list that changed size is the Python encoder's. */
        if (PyList_GET_SIZE(spans) != count) {
            return -1;
        }
        PyObject *span = PyList_GET_ITEM(spans, i);
        Py_INCREF(span);
        int result = put_span(buffer, span);
        Py_DECREF(span);
        if (result < 0) {
            return -1;
        }
    }
    return PyList_GET_SIZE(spans) == count ? 0 : -1;
}

/* Packs `spans` into `buffer`, or has fallback(spans) do it: then *encoded is the bytes it
 * returned (a new reference). -1 with an exception set if neither could. */
static int
encode(Buffer *buffer, PyObject *fallback, PyObject *spans, PyObject **encoded)
{
    *encoded = NULL;
    if (PyList_CheckExact(spans)) {
        if (put_trace(buffer, spans) == 0) {
            return 0;
        }
        PyErr_Clear(); /* the fallback meets the same value and says what is wrong with it */
        buffer->length = 0;
    }
    *encoded = PyObject_CallOneArg(fallback, spans);
    return *encoded == NULL ? -1 : 0;
}

static void
init_buffer(Buffer *buffer)
{
    buffer->data = buffer->stack;
    buffer->length = 0;
    buffer->capacity = STACK_BYTES;
}

static void
free_buffer(Buffer *buffer)
{
    if (buffer->data != buffer->stack) {
        PyMem_Free(buffer->data);
    }
}

static PyObject *
encode_trace(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "encode_trace(fallback, spans)");
        return NULL;
    }
    Buffer buffer;
    init_buffer(&buffer);
    PyObject *encoded;
    if (encode(&buffer, args[0], args[1], &encoded) == 0 && encoded == NULL) {
        encoded = PyBytes_FromStringAndSize(buffer.data, buffer.length);
    }
    free_buffer(&buffer);
    return encoded;
}

/* -- the writer's buffer --------------------------------------------------------------------
 *
 * The native twin of agent.PythonSendBuffer, which says what it does: the traces the writer
 * buffers, encoded, and the bounds they are held to. put() encodes a chunk and appends it in one
 * call. Where the Python buffer keeps one bytes object per trace in a list (and the sender joins
 * them into payloads), this one keeps the traces' msgpack back to back in one block, with where
 * each trace ends and how many spans it holds: buffering a trace allocates no object, and a
 * payload is one copy of a run of the block behind its array header.
 *
 * No lock: put() reads and updates the buffer in C that runs no Python code (encoding, which
 * may run a property's or the fallback's code, is done before, into the Buffer above), so under
 * the GIL it is atomic, as are take() and the readers. (A free-threaded Python runs this module
 * with the GIL enabled: it does not declare otherwise.) */

/* What put() returns, besides 0 (buffered, nothing else to do) and -size (a trace of `size`
 * bytes that fits no payload or not the buffer, dropped): agent.py's WAKE, START, CLOSED. */
#define PUT_WAKE 1   /* buffered, and the buffer is now over half full */
#define PUT_START 2  /* buffered, and needs_worker is set */
#define PUT_CLOSED 4 /* not encoded: the buffer is closed */
#define MAX_ARRAY_HEADER_SIZE 5 /* encoding.MAX_ARRAY_HEADER_SIZE */
#define MIN_STORE_BYTES 16384

typedef struct {
    char *data; /* the traces' msgpack, back to back */
    Py_ssize_t length;
    Py_ssize_t capacity;
    Py_ssize_t *ends;        /* ends[i]: where trace i ends in data */
    Py_ssize_t *span_counts; /* span_counts[i]: how many spans trace i holds */
    Py_ssize_t count;        /* traces */
    Py_ssize_t slots;        /* the room in ends and span_counts */
    Py_ssize_t spans;        /* the sum of span_counts */
} Store;

static void
free_store(Store *store)
{
    PyMem_Free(store->data);
    PyMem_Free(store->ends);
    PyMem_Free(store->span_counts);
    memset(store, 0, sizeof *store);
}

/* Appends a trace; -1 with MemoryError set. `data` grows by doubling, but not past `limit` (the
 * buffer's max_bytes) unless one trace needs more. */
static int
store_append(Store *store, const char *trace, Py_ssize_t size, Py_ssize_t span_count,
             Py_ssize_t limit)
{
    if (size > store->capacity - store->length) {
        if (size > PY_SSIZE_T_MAX - store->length) {
            PyErr_NoMemory();
            return -1;
        }
        Py_ssize_t needed = store->length + size;
        Py_ssize_t capacity = store->capacity > PY_SSIZE_T_MAX / 2 ? PY_SSIZE_T_MAX
                                                                   : store->capacity * 2;
        if (capacity < MIN_STORE_BYTES) {
            capacity = MIN_STORE_BYTES;
        }
        if (capacity > limit) {
            capacity = limit;
        }
        if (capacity < needed) {
            capacity = needed;
        }
        char *data = PyMem_Realloc(store->data, capacity);
        if (data == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        store->data = data;
        store->capacity = capacity;
    }
    if (store->count == store->slots) {
        Py_ssize_t slots = store->slots ? store->slots * 2 : 64;
        Py_ssize_t *ends = PyMem_Resize(store->ends, Py_ssize_t, slots);
        if (ends == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        store->ends = ends;
        Py_ssize_t *span_counts = PyMem_Resize(store->span_counts, Py_ssize_t, slots);
        if (span_counts == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        store->span_counts = span_counts;
        store->slots = slots;
    }
    memcpy(store->data + store->length, trace, size);
    store->length += size;
    store->ends[store->count] = store->length;
    store->span_counts[store->count] = span_count;
    store->count++;
    store->spans += span_count;
    return 0;
}

/* -- EncodedTraces: what SendBuffer.take() hands the sender -------------------------------- */

typedef struct {
    PyObject_HEAD
    Store store;
} TracesObject;

static void
traces_dealloc(TracesObject *self)
{
    free_store(&self->store);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t
traces_length(TracesObject *self)
{
    return self->store.count;
}

/* Where trace i starts. */
static Py_ssize_t
trace_start(Store *store, Py_ssize_t i)
{
    return i == 0 ? 0 : store->ends[i - 1];
}

/* Parses (start, end), a run of the traces; 0 on success. */
static int
parse_run(TracesObject *self, PyObject *args, Py_ssize_t *start, Py_ssize_t *end)
{
    if (!PyArg_ParseTuple(args, "nn", start, end)) {
        return -1;
    }
    if (*start < 0 || *start > *end || *end > self->store.count) {
        PyErr_Format(PyExc_ValueError, "(%zd, %zd) is not a run of %zd traces", *start, *end,
                     self->store.count);
        return -1;
    }
    return 0;
}

static PyObject *
traces_payloads(TracesObject *self, PyObject *arg)
{
    Py_ssize_t room = PyLong_AsSsize_t(arg);
    if (room == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *runs = PyList_New(0);
    if (runs == NULL) {
        return NULL;
    }
    const Store *store = &self->store;
    Py_ssize_t start = 0, sent = 0;
    while (start < store->count) {
        Py_ssize_t end = start;
        while (end < store->count && store->ends[end] - sent <= room) {
            end++;
        }
        if (end == start) {
            end = start + 1; /* a trace too large alone still makes a run of one */
        }
        PyObject *run = Py_BuildValue("(nn)", start, end);
        if (run == NULL || PyList_Append(runs, run) < 0) {
            Py_XDECREF(run);
            Py_DECREF(runs);
            return NULL;
        }
        Py_DECREF(run);
        sent = store->ends[end - 1];
        start = end;
    }
    return runs;
}

static PyObject *
traces_body(TracesObject *self, PyObject *args)
{
    Py_ssize_t start, end;
    if (parse_run(self, args, &start, &end) < 0) {
        return NULL;
    }
    Py_ssize_t size = trace_start(&self->store, end) - trace_start(&self->store, start);
    Buffer head; /* the array header, with the writers above */
    init_buffer(&head);
    if (put_header(&head, end - start, 0x90, 16, 0, 0xdc, 0xdd) < 0) {
        return NULL; /* not reached: a count fits 32 bits long before memory ends */
    }
    PyObject *body = PyBytes_FromStringAndSize(NULL, head.length + size);
    if (body == NULL) {
        return NULL;
    }
    char *out = PyBytes_AS_STRING(body);
    memcpy(out, head.data, head.length);
    out += head.length;
    /* Trace by trace, as b"".join copied them: as fast as one memcpy of the run (~15 ns a trace
     * either way, measured), which glibc does with `rep movsb` for a run this long, and which
     * callgrind counts per byte: ~360 instructions a trace instead of ~25. */
    for (Py_ssize_t i = start; i < end; i++) {
        Py_ssize_t trace_from = trace_start(&self->store, i);
        memcpy(out, self->store.data + trace_from, self->store.ends[i] - trace_from);
        out += self->store.ends[i] - trace_from;
    }
    return body;
}

static PyObject *
traces_span_count(TracesObject *self, PyObject *args)
{
    Py_ssize_t start, end;
    if (parse_run(self, args, &start, &end) < 0) {
        return NULL;
    }
    Py_ssize_t spans = 0;
    for (Py_ssize_t i = start; i < end; i++) {
        spans += self->store.span_counts[i];
    }
    return PyLong_FromSsize_t(spans);
}

static PyObject *
traces_traces(TracesObject *self, PyObject *args)
{
    Py_ssize_t start, end;
    if (parse_run(self, args, &start, &end) < 0) {
        return NULL;
    }
    PyObject *traces = PyList_New(end - start);
    for (Py_ssize_t i = start; traces != NULL && i < end; i++) {
        Py_ssize_t from = trace_start(&self->store, i);
        PyObject *trace = PyBytes_FromStringAndSize(self->store.data + from,
                                                    self->store.ends[i] - from);
        if (trace == NULL) {
            Py_CLEAR(traces);
            break;
        }
        PyList_SET_ITEM(traces, i - start, trace);
    }
    return traces;
}

static PyObject *
traces_span_counts(TracesObject *self, PyObject *args)
{
    Py_ssize_t start, end;
    if (parse_run(self, args, &start, &end) < 0) {
        return NULL;
    }
    PyObject *counts = PyList_New(end - start);
    for (Py_ssize_t i = start; counts != NULL && i < end; i++) {
        PyObject *count = PyLong_FromSsize_t(self->store.span_counts[i]);
        if (count == NULL) {
            Py_CLEAR(counts);
            break;
        }
        PyList_SET_ITEM(counts, i - start, count);
    }
    return counts;
}

static PyObject *
traces_spans(TracesObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(self->store.spans);
}

static PyMethodDef traces_methods[] = {
    {"payloads", (PyCFunction)traces_payloads, METH_O,
     "payloads(room) -> [(start, end), ...]: consecutive runs of the traces, each as long as\n"
     "fits `room` bytes (a trace too large alone still makes a run of one)."},
    {"body", (PyCFunction)traces_body, METH_VARARGS,
     "body(start, end) -> bytes: the traces start..end-1 behind their msgpack array header."},
    {"span_count", (PyCFunction)traces_span_count, METH_VARARGS,
     "span_count(start, end) -> int: the spans of the traces start..end-1."},
    {"traces", (PyCFunction)traces_traces, METH_VARARGS,
     "traces(start, end) -> [bytes, ...]: each of the traces start..end-1."},
    {"span_counts", (PyCFunction)traces_span_counts, METH_VARARGS,
     "span_counts(start, end) -> [int, ...]: the spans of each of the traces start..end-1."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef traces_getset[] = {
    {"spans", (getter)traces_spans, NULL, "The spans of all the traces.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods traces_as_sequence = {.sq_length = (lenfunc)traces_length};

static PyTypeObject Traces_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ddagent.writer._encoder.EncodedTraces",
    .tp_basicsize = sizeof(TracesObject),
    .tp_dealloc = (destructor)traces_dealloc,
    .tp_as_sequence = &traces_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Encoded traces taken out of a SendBuffer (agent.PythonEncodedTraces' twin).",
    .tp_methods = traces_methods,
    .tp_getset = traces_getset,
};

/* -- SendBuffer ---------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    Store store;
    PyObject *fallback; /* the Python encoder */
    Py_ssize_t max_bytes;
    Py_ssize_t max_traces;
    Py_ssize_t max_payload_bytes;
    char closed;
    char needs_worker;
} SendBufferObject;

static PyObject *
buffer_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"fallback", "max_bytes", "max_traces", "max_payload_bytes", NULL};
    PyObject *fallback;
    Py_ssize_t max_bytes, max_traces, max_payload_bytes;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Onnn", keywords, &fallback, &max_bytes,
                                     &max_traces, &max_payload_bytes)) {
        return NULL;
    }
    SendBufferObject *self = (SendBufferObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    memset(&self->store, 0, sizeof self->store);
    Py_INCREF(fallback);
    self->fallback = fallback;
    self->max_bytes = max_bytes;
    self->max_traces = max_traces;
    self->max_payload_bytes = max_payload_bytes;
    self->closed = 0;
    self->needs_worker = 1;
    return (PyObject *)self;
}

/* Only the fallback is held: a module's function, but a buffer given a closure that holds it
 * would make a cycle. */
static int
buffer_traverse(SendBufferObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->fallback);
    return 0;
}

static int
buffer_clear(SendBufferObject *self)
{
    Py_CLEAR(self->fallback);
    return 0;
}

static void
buffer_dealloc(SendBufferObject *self)
{
    PyObject_GC_UnTrack(self);
    buffer_clear(self);
    free_store(&self->store);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* put()'s work: *status is what it returns; -1 with an exception set instead. */
static int
put_status(SendBufferObject *self, PyObject *spans, Py_ssize_t *status)
{
    *status = 0;
    Py_ssize_t span_count = PyList_CheckExact(spans) ? PyList_GET_SIZE(spans)
                                                     : PyObject_Size(spans);
    if (span_count <= 0) {
        return span_count < 0 ? -1 : 0;
    }
    if (self->closed) {
        *status = PUT_CLOSED;
        return 0;
    }
    Buffer buffer;
    init_buffer(&buffer);
    PyObject *encoded;
    if (encode(&buffer, self->fallback, spans, &encoded) < 0) {
        free_buffer(&buffer);
        return -1;
    }
    const char *trace = buffer.data;
    Py_ssize_t size = buffer.length;
    if (encoded != NULL) {
        if (!PyBytes_Check(encoded)) {
            PyErr_Format(PyExc_TypeError, "the fallback encoder returned %.100s, not bytes",
                         Py_TYPE(encoded)->tp_name);
            Py_DECREF(encoded);
            free_buffer(&buffer);
            return -1;
        }
        trace = PyBytes_AS_STRING(encoded);
        size = PyBytes_GET_SIZE(encoded);
    }
    /* From here to the end no Python code runs: the buffer cannot change under it. */
    int failed = 0;
    Store *store = &self->store;
    if (self->closed) { /* since encoding began */
        *status = PUT_CLOSED;
    }
    else if (size > self->max_payload_bytes - MAX_ARRAY_HEADER_SIZE
             || size > self->max_bytes - store->length || store->count >= self->max_traces) {
        *status = -size;
    }
    else if (store_append(store, trace, size, span_count, self->max_bytes) < 0) {
        failed = 1; /* MemoryError */
    }
    else {
        /* `x * 2 > max` as `x > max / 2`, which cannot overflow */
        if (store->length > self->max_bytes / 2 || store->count > self->max_traces / 2) {
            *status |= PUT_WAKE;
        }
        if (self->needs_worker) {
            *status |= PUT_START;
        }
    }
    free_buffer(&buffer);
    Py_XDECREF(encoded); /* may run code (a bytes subclass's __del__): the buffer is done */
    return failed ? -1 : 0;
}

static PyObject *
buffer_put(SendBufferObject *self, PyObject *spans)
{
    Py_ssize_t status;
    return put_status(self, spans, &status) < 0 ? NULL : PyLong_FromSsize_t(status);
}

static PyObject *
buffer_take(SendBufferObject *self, PyObject *unused)
{
    (void)unused;
    TracesObject *taken = PyObject_New(TracesObject, &Traces_Type);
    if (taken == NULL) {
        return NULL;
    }
    taken->store = self->store;
    memset(&self->store, 0, sizeof self->store);
    return (PyObject *)taken;
}

static Py_ssize_t
buffer_length(SendBufferObject *self)
{
    return self->store.count;
}

static PyObject *
buffer_bytes(SendBufferObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(self->store.length);
}

static PyObject *
buffer_spans(SendBufferObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(self->store.spans);
}

static PyMethodDef buffer_methods[] = {
    {"put", (PyCFunction)buffer_put, METH_O,
     "put(spans) -> int: encode a trace chunk and buffer it if it fits (see\n"
     "agent.PythonSendBuffer.put)."},
    {"take", (PyCFunction)buffer_take, METH_NOARGS,
     "take() -> EncodedTraces: the buffered traces, leaving the buffer empty."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef buffer_members[] = {
    {"max_bytes", Py_T_PYSSIZET, offsetof(SendBufferObject, max_bytes), 0, NULL},
    {"max_traces", Py_T_PYSSIZET, offsetof(SendBufferObject, max_traces), 0, NULL},
    {"max_payload_bytes", Py_T_PYSSIZET, offsetof(SendBufferObject, max_payload_bytes), 0,
     NULL},
    {"closed", Py_T_BOOL, offsetof(SendBufferObject, closed), 0,
     "Set: put() buffers nothing more and returns CLOSED."},
    {"needs_worker", Py_T_BOOL, offsetof(SendBufferObject, needs_worker), 0,
     "Set (as it starts): put() adds START to what it returns."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef buffer_getset[] = {
    {"bytes", (getter)buffer_bytes, NULL, "The bytes of the buffered traces.", NULL},
    {"spans", (getter)buffer_spans, NULL, "The spans of the buffered traces.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods buffer_as_sequence = {.sq_length = (lenfunc)buffer_length};

static PyTypeObject SendBuffer_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ddagent.writer._encoder.SendBuffer",
    .tp_basicsize = sizeof(SendBufferObject),
    .tp_dealloc = (destructor)buffer_dealloc,
    .tp_as_sequence = &buffer_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "SendBuffer(fallback, max_bytes, max_traces, max_payload_bytes): the writer's\n"
              "buffer of encoded traces (agent.PythonSendBuffer's twin); `fallback` encodes\n"
              "what the native encoder does not.",
    .tp_traverse = (traverseproc)buffer_traverse,
    .tp_clear = (inquiry)buffer_clear,
    .tp_methods = buffer_methods,
    .tp_members = buffer_members,
    .tp_getset = buffer_getset,
    .tp_new = buffer_new,
};

/* -- AgentWriter.write --------------------------------------------------------------------
 *
 * agent.AgentWriter.write in C, which agent.py installs as the method where this module is built
 * (the Python method says what it does): the buffer's put() and nothing else in the usual case,
 * calling back into the writer's Python only for put()'s other answers. The Python method's own
 * frame was ~570 of the ~4.2k instructions write() cost a single-span trace (callgrind, 3.11). */

static PyObject *str_buffer, *str_put, *str_after_put, *str_drop_unencodable;

/* Where AgentWriter keeps _buffer, a slot: read straight from the writer, as for spans above
 * (PyObject_GetAttr cost ~170 instructions a write). */
static Layout writer_layout;

/* The writer's buffer, a new reference; NULL with an exception set. */
static PyObject *
writer_buffer(PyObject *writer)
{
    if (knows_layout(&writer_layout, Py_TYPE(writer), &str_buffer, 1)) {
        PyObject *buffer = *(PyObject **)((char *)writer + writer_layout.offsets[0]);
        if (buffer != NULL) {
            Py_INCREF(buffer);
            return buffer;
        }
    }
    return PyObject_GetAttr(writer, str_buffer); /* and its AttributeError if it is unset */
}

static PyObject *
writer_write(PyObject *writer, PyObject *spans)
{
    Py_ssize_t status = 0;
    int result = -1;
    PyObject *buffer = writer_buffer(writer);
    if (buffer != NULL && Py_IS_TYPE(buffer, &SendBuffer_Type)) {
        result = put_status((SendBufferObject *)buffer, spans, &status);
    }
    else if (buffer != NULL) { /* the Python buffer */
        PyObject *answer = PyObject_CallMethodOneArg(buffer, str_put, spans);
        if (answer != NULL) {
            status = PyLong_AsSsize_t(answer);
            result = status == -1 && PyErr_Occurred() ? -1 : 0;
            Py_DECREF(answer);
        }
    }
    Py_XDECREF(buffer);
    if (result == 0 && status == 0) {
        Py_RETURN_NONE;
    }
    PyObject *call[3] = {writer, spans, NULL};
    if (result == 0) {
        call[2] = PyLong_FromSsize_t(status);
        if (call[2] == NULL) {
            return NULL;
        }
        PyObject *done = PyObject_VectorcallMethod(str_after_put, call, 3, NULL);
        Py_DECREF(call[2]);
        return done;
    }
    /* `except Exception as e`: anything else (KeyboardInterrupt ...) goes on up */
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        return NULL;
    }
#if PY_VERSION_HEX >= 0x030C0000
    call[2] = PyErr_GetRaisedException();
#else
    PyObject *type, *traceback;
    PyErr_Fetch(&type, &call[2], &traceback);
    PyErr_NormalizeException(&type, &call[2], &traceback);
    if (traceback != NULL) {
        PyException_SetTraceback(call[2], traceback);
    }
    Py_XDECREF(type);
    Py_XDECREF(traceback);
#endif
    PyObject *done = PyObject_VectorcallMethod(str_drop_unencodable, call, 3, NULL);
    Py_DECREF(call[2]);
    return done;
}

static PyMethodDef write_definition = {
    "write", (PyCFunction)writer_write, METH_O,
    "Buffer one trace chunk for sending. Never blocks on the network, never raises.",
};

static PyObject *
write_method(PyObject *module, PyObject *cls)
{
    (void)module;
    if (!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "write_method(cls): cls must be a class");
        return NULL;
    }
    /* A method descriptor, as a C type's methods have: a call of writer.write(spans) then
     * makes no bound method (Python's LOAD_METHOD and PyObject_VectorcallMethod skip it). */
    return PyDescr_NewMethod((PyTypeObject *)cls, &write_definition);
}

static PyMethodDef methods[] = {
    {"write_method", (PyCFunction)write_method, METH_O,
     "write_method(cls) -> the C twin of AgentWriter.write, as a method of `cls`."},
    {"encode_trace", (PyCFunction)(void (*)(void))encode_trace, METH_FASTCALL,
     "encode_trace(fallback, spans) -> bytes: the msgpack v0.4 trace chunk of `spans` (a list),\n"
     "or fallback(spans) when a value is outside what this encoder packs."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT, "ddagent.writer._encoder",
    "A native msgpack encoder of trace chunks and the writer's buffer of them (see\n"
    "ddagent/writer/encoding.py and agent.py).", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__encoder(void)
{
    for (int field = 0; field < FIELD_COUNT; field++) {
        if (attributes[field] == NULL) {
            attributes[field] = PyUnicode_InternFromString(attribute_names[field]);
            if (attributes[field] == NULL) {
                return NULL;
            }
        }
    }
    struct {
        PyObject **name;
        const char *text;
    } names[] = {{&str_buffer, "_buffer"}, {&str_put, "put"}, {&str_after_put, "_after_put"},
                 {&str_drop_unencodable, "_drop_unencodable"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (*names[i].name == NULL) {
            *names[i].name = PyUnicode_InternFromString(names[i].text);
            if (*names[i].name == NULL) {
                return NULL;
            }
        }
    }
    if (PyType_Ready(&Traces_Type) < 0 || PyType_Ready(&SendBuffer_Type) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&module_definition);
    if (module == NULL) {
        return NULL;
    }
    Py_INCREF(&Traces_Type);
    if (PyModule_AddObject(module, "EncodedTraces", (PyObject *)&Traces_Type) < 0) {
        Py_DECREF(&Traces_Type);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(&SendBuffer_Type);
    if (PyModule_AddObject(module, "SendBuffer", (PyObject *)&SendBuffer_Type) < 0) {
        Py_DECREF(&SendBuffer_Type);
        Py_DECREF(module);
        return NULL;
    }
    if (PyModule_AddIntConstant(module, "WAKE", PUT_WAKE) < 0
        || PyModule_AddIntConstant(module, "START", PUT_START) < 0
        || PyModule_AddIntConstant(module, "CLOSED", PUT_CLOSED) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
