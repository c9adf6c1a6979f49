/* The native twin of encoding.encode_trace_python: one trace chunk as a msgpack array of v0.4
 * span maps, packed straight from the spans' attributes.
 *
 * It exists for speed (callgrind, a single-span trace with two tags: building the span maps and
 * packing them with msgpack was ~20k instructions of the ~55k a traced span cost then, this
 * encoder ~4.9k, and ~3.4k since it stores its bytes in place; see bench/README.md), and it
 * gives byte for byte what the Python encoder gives: the same fields, the same smallest msgpack
 * forms msgpack-python picks (tests/writer/test_native_encoder.py compares the two on generated
 * spans).
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
#include <stdint.h>
#include <string.h>
#ifndef Py_T_OBJECT_EX /* Python < 3.12 */
#include <structmember.h>
#define Py_T_OBJECT_EX T_OBJECT_EX
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

/* Where a __slots__ class (ddagent's Span) keeps each field, so that its spans' fields are read
 * straight from the object, as its slot descriptors would read them: PyObject_GetAttr costs ~150
 * instructions a field (callgrind), ~1.8k of a span's ~4k to encode. One class is remembered, with
 * the version tag it had: assigning to the class (replacing a slot by a property, say) changes
 * the tag, and its spans are then read through PyObject_GetAttr until the layout is learnt anew. */
static struct {
    PyTypeObject *type; /* a strong reference; NULL until a class qualifies */
    unsigned int version_tag;
    Py_ssize_t offsets[FIELD_COUNT];
} slots;

static int
has_version_tag(PyTypeObject *type)
{
#if PY_VERSION_HEX >= 0x030C0000
    return type->tp_version_tag != 0; /* 3.12+ zero it when the type changes (the flag is unused) */
#else
    return PyType_HasFeature(type, Py_TPFLAGS_VALID_VERSION_TAG) && type->tp_version_tag != 0;
#endif
}

/* Remembers `type` if every field is a plain slot of it; 0 if it is not (or on an error). */
static int
learn_slots(PyTypeObject *type)
{
    if (!has_version_tag(type)) {
        return 0;
    }
    Py_ssize_t offsets[FIELD_COUNT];
    for (int field = 0; field < FIELD_COUNT; field++) {
        /* The attribute as `type` resolves it (its MRO's first definition), borrowed; it runs
         * no Python code. (CPython's own lookup: the static builtin types in an MRO have no
         * tp_dict to read on 3.12+.) */
        PyObject *descriptor = _PyType_Lookup(type, attributes[field]);
        if (descriptor == NULL || Py_TYPE(descriptor) != &PyMemberDescr_Type) {
            return 0;
        }
        PyMemberDef *member = ((PyMemberDescrObject *)descriptor)->d_member;
        if (member->type != Py_T_OBJECT_EX) {
            return 0;
        }
        offsets[field] = member->offset;
    }
    Py_INCREF(type);
    Py_XSETREF(slots.type, type);
    slots.version_tag = type->tp_version_tag;
    memcpy(slots.offsets, offsets, sizeof offsets);
    return 1;
}

static int
read_from_slots(PyTypeObject *type)
{
    if (type == slots.type && has_version_tag(type) && type->tp_version_tag == slots.version_tag) {
        return 1;
    }
    return learn_slots(type);
}

static int
put_span(Buffer *buffer, PyObject *span)
{
    if (put_byte(buffer, 0x8c) < 0) { /* a map of FIELD_COUNT (12) entries */
        return -1;
    }
    if (read_from_slots(Py_TYPE(span))) {
        for (int field = 0; field < FIELD_COUNT; field++) {
            PyObject *value = *(PyObject **)((char *)span + slots.offsets[field]);
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

static PyObject *
encode_trace(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "encode_trace(fallback, spans)");
        return NULL;
    }
    PyObject *fallback = args[0], *spans = args[1];
    if (PyList_CheckExact(spans)) {
        Buffer buffer;
        buffer.data = buffer.stack;
        buffer.length = 0;
        buffer.capacity = STACK_BYTES;
        int result = put_trace(&buffer, spans);
        PyObject *encoded = NULL;
        if (result == 0) {
            encoded = PyBytes_FromStringAndSize(buffer.data, buffer.length);
        }
        if (buffer.data != buffer.stack) {
            PyMem_Free(buffer.data);
        }
        if (encoded != NULL || result == 0) {
            return encoded; /* NULL only if the bytes could not be allocated */
        }
        PyErr_Clear(); /* the fallback meets the same value and says what is wrong with it */
    }
    return PyObject_CallOneArg(fallback, spans);
}

static PyMethodDef methods[] = {
    {"encode_trace", (PyCFunction)(void (*)(void))encode_trace, METH_FASTCALL,
     "encode_trace(fallback, spans) -> bytes: the msgpack v0.4 trace chunk of `spans` (a list),\n"
     "or fallback(spans) when a value is outside what this encoder packs."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT, "ddagent.writer._encoder",
    "A native msgpack encoder of trace chunks (see ddagent/writer/encoding.py).", -1, methods,
    NULL, NULL, NULL, NULL,
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
    return PyModule_Create(&module_definition);
}
