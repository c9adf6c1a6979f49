/* The native twins of span.PythonSpanCore, tracer.PythonTracerCore and
 * context.PythonTraceBufferCore: a span's fields and the methods every traced operation calls
 * (creating it, setting string tags and numeric metrics, finishing it, `with`); the tracer's two
 * per-span calls (trace() and _on_span_finish) and a trace buffer's (span_started and
 * span_finished), each in their own section below.
 *
 * It exists for speed (callgrind, see bench/README.md): creating a span through the Python
 * __init__ costs ~9k instructions, most of it the Python call from type.__call__, the two id
 * draws from random.Random and the clock reads; here it is ~1.5k.
 *
 * It handles only the usual case of each method, exactly as PythonSpanCore does it, and hands
 * every other call to PythonSpanCore's own method (the "twin", given once by span.py): a tag whose
 * key or value is not a str, a metric that is not an int or a finite float, an explicit start or
 * finish time, an exception leaving a `with` block, a field in a state the tracer never leaves it
 * in. So what an unusual call does (its conversions, logs and errors) is written once, in Python.
 *
 * The fields are plain object members, as __slots__ would make them: the native encoder
 * (writer/_encoder.c) and Python code read them the same way for either core.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#ifndef Py_T_OBJECT_EX /* Python < 3.12 */
#include <structmember.h>
#define Py_T_OBJECT_EX T_OBJECT_EX
#endif
#if PY_VERSION_HEX < 0x030A0000 /* Python 3.9 */
static inline PyObject *
Py_NewRef(PyObject *object)
{
    Py_INCREF(object);
    return object;
}

static inline PyObject *
Py_XNewRef(PyObject *object)
{
    Py_XINCREF(object);
    return object;
}
#endif

typedef struct {
    PyObject_HEAD
    /* the wire fields, in the order of span.PythonSpanCore.__slots__ */
    PyObject *trace_id, *span_id, *parent_id, *name, *service, *resource, *span_type;
    PyObject *start_ns, *duration_ns, *error, *meta, *metrics;
    /* the tracer's bookkeeping */
    PyObject *tracer, *trace, *parent, *prev_active, *start_monotonic_ns, *finished;
} SpanObject;

#define FIELD_COUNT 18

static PyTypeObject SpanCoreType;

/* PythonSpanCore's methods, called for everything the fast paths here leave to Python. */
static struct {
    PyObject *init, *set_tag, *set_metric, *finish, *exit;
} twin;

static PyObject *str_on_span_finish, *str_finish, *zero;
static PyObject *native_finish; /* SpanCore.finish, to see whether a subclass replaced it */

/* -- ids: splitmix64, seeded by ids.py from os.urandom and again in a forked child --------- */

static uint64_t id_state;

static uint64_t
random_id(void)
{
    uint64_t z = (id_state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return z ? z : 1; /* ids are never zero */
}

static PyObject *
random_bits(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyLong_FromUnsignedLongLong(random_id());
}

static PyObject *
seed(PyObject *module, PyObject *arg)
{
    (void)module;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    if (view.len < 8) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "seed() needs at least 8 bytes");
        return NULL;
    }
    memcpy(&id_state, view.buf, 8);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

/* A 128-bit trace id as ddagent/ids.py lays it out: the start second, 32 zero bits, 64 random. */
static PyObject *
new_trace_id(int64_t start_ns)
{
    uint64_t low = random_id(), high = (uint64_t)(start_ns / 1000000000);
    if (high == 0) {
        return PyLong_FromUnsignedLongLong(low);
    }
    unsigned char bytes[16]; /* little-endian */
    for (int i = 0; i < 8; i++) {
        bytes[i] = (unsigned char)(low >> (8 * i));
        bytes[8 + i] = 0;
    }
    for (int i = 0; i < 4; i++) {
        bytes[12 + i] = (unsigned char)(high >> (8 * i));
    }
#if PY_VERSION_HEX >= 0x030D0000
    return PyLong_FromUnsignedNativeBytes(bytes, 16, Py_ASNATIVEBYTES_LITTLE_ENDIAN);
#else
    return _PyLong_FromByteArray(bytes, 16, 1, 0);
#endif
}

/* -- clocks: CPython's own, so that time.time_ns()/monotonic_ns() read the same ----------- */

static int
now_ns(int64_t *wall, int64_t *monotonic)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyTime_t w, m;
    if (PyTime_Time(&w) < 0 || PyTime_Monotonic(&m) < 0) {
        return -1;
    }
    *wall = w;
    *monotonic = m;
#else
    *wall = _PyTime_GetSystemClock();
    *monotonic = _PyTime_GetMonotonicClock();
#endif
    return 0;
}

/* -- handing a call to the twin ------------------------------------------------------------ */

#define MAX_DELEGATED_ARGS 16

static PyObject *
missing_twin(void)
{
    PyErr_SetString(PyExc_RuntimeError, "ddagent._span: use_python_twin() was not called");
    return NULL;
}

/* twin_method(self, *args, **kwargs), from a vectorcall's arguments. */
static PyObject *
delegate(PyObject *method, PyObject *self, PyObject *const *args, Py_ssize_t nargs,
         PyObject *kwnames)
{
    if (method == NULL) {
        return missing_twin();
    }
    Py_ssize_t total = nargs + (kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames));
    if (total >= MAX_DELEGATED_ARGS) {
        PyErr_SetString(PyExc_TypeError, "too many arguments");
        return NULL;
    }
    PyObject *all[MAX_DELEGATED_ARGS];
    all[0] = self;
    if (total > 0) {
        memcpy(all + 1, args, total * sizeof(PyObject *));
    }
    return PyObject_Vectorcall(method, all, nargs + 1, kwnames);
}

/* -- __init__ ------------------------------------------------------------------------------ */

/* 1 for None or int 0 (a new id is drawn), 0 for another int; -1 for a value of another type,
 * whose truth Python's `or` decides (it may run the value's own code). */
static int
absent_id(PyObject *value)
{
    if (value == Py_None) {
        return 1;
    }
    if (PyLong_CheckExact(value)) {
        return !PyObject_IsTrue(value); /* an exact int's truth runs no Python code */
    }
    return -1;
}

/* Fields are replaced (never just stored): __init__ may run again on the same span. */
#define SET_FIELD(field, value) Py_XSETREF(self->field, (value))

/* A new span's fields, from resolved arguments: `trace_id`/`span_id` NULL draw new ids. */
static int
fill_span(SpanObject *self, PyObject *tracer, PyObject *name, PyObject *service,
          PyObject *resource, PyObject *span_type, PyObject *trace_id_or_null,
          PyObject *span_id_or_null, PyObject *parent_id)
{
    int64_t wall, monotonic;
    if (now_ns(&wall, &monotonic) < 0) {
        return -1;
    }
    PyObject *start_ns = PyLong_FromLongLong(wall);
    PyObject *start_monotonic_ns = PyLong_FromLongLong(monotonic);
    PyObject *trace_id = trace_id_or_null == NULL ? new_trace_id(wall)
                                                  : Py_NewRef(trace_id_or_null);
    PyObject *span_id = span_id_or_null == NULL ? PyLong_FromUnsignedLongLong(random_id())
                                                : Py_NewRef(span_id_or_null);
    PyObject *meta = PyDict_New();
    PyObject *metrics = PyDict_New();
    if (start_ns == NULL || start_monotonic_ns == NULL || trace_id == NULL || span_id == NULL
        || meta == NULL || metrics == NULL) {
        Py_XDECREF(start_ns);
        Py_XDECREF(start_monotonic_ns);
        Py_XDECREF(trace_id);
        Py_XDECREF(span_id);
        Py_XDECREF(meta);
        Py_XDECREF(metrics);
        return -1;
    }
    SET_FIELD(tracer, Py_NewRef(tracer));
    SET_FIELD(name, Py_NewRef(name));
    SET_FIELD(service, Py_NewRef(service));
    SET_FIELD(resource, Py_NewRef(resource == Py_None ? name : resource));
    SET_FIELD(span_type, Py_NewRef(span_type));
    SET_FIELD(start_ns, start_ns);
    SET_FIELD(start_monotonic_ns, start_monotonic_ns);
    SET_FIELD(trace_id, trace_id);
    SET_FIELD(span_id, span_id);
    SET_FIELD(parent_id, Py_NewRef(parent_id));
    SET_FIELD(error, Py_NewRef(zero));
    SET_FIELD(meta, meta);
    SET_FIELD(metrics, metrics);
    SET_FIELD(duration_ns, Py_NewRef(Py_None));
    SET_FIELD(finished, Py_NewRef(Py_False));
    SET_FIELD(trace, Py_NewRef(Py_None));
    SET_FIELD(parent, Py_NewRef(Py_None));
    SET_FIELD(prev_active, Py_NewRef(Py_None));
    return 0;
}

static int
span_init(SpanObject *self, PyObject *args, PyObject *kwargs)
{
    /* (tracer, name, service, resource, span_type, trace_id, span_id, parent_id, start) */
    PyObject *arg[9] = {NULL};
    Py_ssize_t nargs = PyTuple_GET_SIZE(args);
    if ((kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) || nargs < 2 || nargs > 9) {
        goto python;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        arg[i] = PyTuple_GET_ITEM(args, i);
    }
    for (int i = 2; i < 9; i++) {
        if (arg[i] == NULL) {
            arg[i] = Py_None;
        }
    }
    if (arg[8] != Py_None) { /* an explicit start time */
        goto python;
    }
    /* `trace_id or <new>`, `span_id or <new>` */
    int new_trace_id_needed = absent_id(arg[5]), new_span_id_needed = absent_id(arg[6]);
    if (new_trace_id_needed < 0 || new_span_id_needed < 0) {
        goto python;
    }
    return fill_span(self, arg[0], arg[1], arg[2], arg[3], arg[4],
                     new_trace_id_needed ? NULL : arg[5], new_span_id_needed ? NULL : arg[6],
                     arg[7]);

python:;
    PyObject *self_and_args = PyTuple_New(nargs + 1);
    if (self_and_args == NULL) {
        return -1;
    }
    PyTuple_SET_ITEM(self_and_args, 0, Py_NewRef((PyObject *)self));
    for (Py_ssize_t i = 0; i < nargs; i++) {
        PyTuple_SET_ITEM(self_and_args, i + 1, Py_NewRef(PyTuple_GET_ITEM(args, i)));
    }
    PyObject *result = twin.init == NULL ? missing_twin()
                                         : PyObject_Call(twin.init, self_and_args, kwargs);
    Py_DECREF(self_and_args);
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

/* -- tags and metrics ---------------------------------------------------------------------- */

static PyObject *
span_set_tag(SpanObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    /* str keys only: their hash runs no Python code, so a failure (no memory) can be left to
     * the twin to meet again and log */
    if (nargs == 2 && kwnames == NULL && PyUnicode_CheckExact(args[0])
        && PyUnicode_CheckExact(args[1]) && self->meta != NULL && PyDict_CheckExact(self->meta)) {
        if (PyDict_SetItem(self->meta, args[0], args[1]) == 0) {
            Py_RETURN_NONE;
        }
        PyErr_Clear();
    }
    return delegate(twin.set_tag, (PyObject *)self, args, nargs, kwnames);
}

static PyObject *
span_set_metric(SpanObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs == 2 && kwnames == NULL && self->metrics != NULL
        && PyDict_CheckExact(self->metrics)) {
        PyObject *value = args[1];
        if (PyFloat_CheckExact(value) && isfinite(PyFloat_AS_DOUBLE(value))) {
            if (PyDict_SetItem(self->metrics, args[0], value) < 0) {
                return NULL; /* as the twin: storing the metric is not guarded */
            }
            Py_RETURN_NONE;
        }
        if (PyLong_CheckExact(value)) {
            double number = PyLong_AsDouble(value);
            if (number == -1.0 && PyErr_Occurred()) {
                PyErr_Clear(); /* too large for a float: the twin logs and drops it */
            }
            else {
                PyObject *converted = PyFloat_FromDouble(number);
                if (converted == NULL) {
                    return NULL;
                }
                int stored = PyDict_SetItem(self->metrics, args[0], converted);
                Py_DECREF(converted);
                if (stored < 0) {
                    return NULL;
                }
                Py_RETURN_NONE;
            }
        }
    }
    return delegate(twin.set_metric, (PyObject *)self, args, nargs, kwnames);
}

/* -- finishing ----------------------------------------------------------------------------- */

/* finish() without a finish time; the twin's for anything unusual. */
static PyObject *
finish_now(SpanObject *self)
{
    if (self->finished == Py_True) {
        return Py_NewRef(Py_None);
    }
    PyObject *start = self->start_monotonic_ns;
    if (self->finished != Py_False || self->tracer == NULL || self->duration_ns == NULL
        || (self->duration_ns == Py_None && (start == NULL || !PyLong_CheckExact(start)))) {
        return delegate(twin.finish, (PyObject *)self, NULL, 0, NULL);
    }
    if (self->duration_ns == Py_None) {
        long long started = PyLong_AsLongLong(start);
        if (started == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            return delegate(twin.finish, (PyObject *)self, NULL, 0, NULL);
        }
        int64_t wall, monotonic;
        if (now_ns(&wall, &monotonic) < 0) {
            return NULL;
        }
        if ((started < 0 && monotonic > LLONG_MAX + started)
            || (started > 0 && monotonic < LLONG_MIN + started)) {
            return delegate(twin.finish, (PyObject *)self, NULL, 0, NULL); /* Python's ints */
        }
        PyObject *duration = PyLong_FromLongLong(monotonic - started);
        if (duration == NULL) {
            return NULL;
        }
        SET_FIELD(duration_ns, duration);
    }
    SET_FIELD(finished, Py_NewRef(Py_True));
    if (self->tracer == Py_None) {
        Py_RETURN_NONE;
    }
    PyObject *tracer = Py_NewRef(self->tracer); /* the call may replace the field */
    PyObject *result = PyObject_CallMethodOneArg(tracer, str_on_span_finish, (PyObject *)self);
    Py_DECREF(tracer);
    if (result == NULL) {
        return NULL;
    }
    Py_DECREF(result);
    Py_RETURN_NONE;
}

static PyObject *
span_finish(SpanObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames == NULL && (nargs == 0 || (nargs == 1 && args[0] == Py_None))) {
        return finish_now(self);
    }
    return delegate(twin.finish, (PyObject *)self, args, nargs, kwnames);
}

/* -- with ---------------------------------------------------------------------------------- */

static PyObject *
span_enter(PyObject *self, PyObject *unused)
{
    (void)unused;
    return Py_NewRef(self);
}

static PyObject *
span_exit(SpanObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 3 || kwnames != NULL || args[0] != Py_None) {
        return delegate(twin.exit, (PyObject *)self, args, nargs, kwnames);
    }
    /* self.finish(), which a subclass (or, with a __dict__, an instance) may have replaced */
    PyObject *result;
    PyTypeObject *type = Py_TYPE(self);
    if (type->tp_dictoffset == 0 && _PyType_Lookup(type, str_finish) == native_finish) {
        result = finish_now(self);
    }
    else {
        result = PyObject_CallMethodNoArgs((PyObject *)self, str_finish);
    }
    if (result == NULL) {
        return NULL;
    }
    Py_DECREF(result);
    Py_RETURN_NONE;
}

/* -- the three types' fields ----------------------------------------------------------------
 *
 * SpanCore, TracerCore and TraceBufferCore objects are each an object header followed by their
 * fields, all object pointers: the garbage collector's and deallocation's walk over them is one
 * walk, given the type's count. */

static PyObject **
object_fields(PyObject *self)
{
    return (PyObject **)((char *)self + sizeof(PyObject));
}

static int
traverse_fields(PyObject *self, int count, visitproc visit, void *arg)
{
    PyObject **field = object_fields(self);
    for (int i = 0; i < count; i++) {
        Py_VISIT(field[i]);
    }
    return 0;
}

/* 0 while a field is unset (an object whose __init__ did not run, say). */
static int
all_fields_set(PyObject *self, int count)
{
    PyObject **field = object_fields(self);
    for (int i = 0; i < count; i++) {
        if (field[i] == NULL) {
            return 0;
        }
    }
    return 1;
}

static int
clear_fields(PyObject *self, int count)
{
    PyObject **field = object_fields(self);
    for (int i = 0; i < count; i++) {
        Py_CLEAR(field[i]);
    }
    return 0;
}

/* -- the type ------------------------------------------------------------------------------ */

static int
span_traverse(SpanObject *self, visitproc visit, void *arg)
{
    return traverse_fields((PyObject *)self, FIELD_COUNT, visit, arg);
}

static int
span_clear(SpanObject *self)
{
    return clear_fields((PyObject *)self, FIELD_COUNT);
}

static void
span_dealloc(SpanObject *self)
{
    PyObject_GC_UnTrack(self);
    Py_TRASHCAN_BEGIN(self, span_dealloc)
    span_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
    Py_TRASHCAN_END
}

#define MEMBER(name, field) \
    {name, Py_T_OBJECT_EX, offsetof(SpanObject, field), 0, NULL}

static PyMemberDef span_members[] = {
    MEMBER("trace_id", trace_id),
    MEMBER("span_id", span_id),
    MEMBER("parent_id", parent_id),
    MEMBER("name", name),
    MEMBER("service", service),
    MEMBER("resource", resource),
    MEMBER("span_type", span_type),
    MEMBER("start_ns", start_ns),
    MEMBER("duration_ns", duration_ns),
    MEMBER("error", error),
    MEMBER("meta", meta),
    MEMBER("metrics", metrics),
    MEMBER("tracer", tracer),
    MEMBER("_trace", trace),
    MEMBER("_parent", parent),
    MEMBER("_prev_active", prev_active),
    MEMBER("_start_monotonic_ns", start_monotonic_ns),
    MEMBER("_finished", finished),
    {NULL, 0, 0, 0, NULL},
};

/* `finished`, read on every request by the web layers: a Python property costs a call (~0.7k
 * instructions, callgrind) where this getter costs a pointer read. */
static PyObject *
span_get_finished(SpanObject *self, void *closure)
{
    (void)closure;
    if (self->finished == NULL) {
        PyErr_SetString(PyExc_AttributeError, "_finished");
        return NULL;
    }
    return Py_NewRef(self->finished);
}

static PyGetSetDef span_getset[] = {
    {"finished", (getter)span_get_finished, NULL, "Whether finish() has run.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

#define FASTCALL(function) (PyCFunction)(void (*)(void))(function), METH_FASTCALL | METH_KEYWORDS

static PyMethodDef span_methods[] = {
    {"finish", FASTCALL(span_finish), "finish(finish_time=None): as span.PythonSpanCore.finish"},
    {"set_tag", FASTCALL(span_set_tag), "set_tag(key, value): as span.PythonSpanCore.set_tag"},
    {"set_metric", FASTCALL(span_set_metric),
     "set_metric(key, value): as span.PythonSpanCore.set_metric"},
    {"__enter__", span_enter, METH_NOARGS, NULL},
    {"__exit__", FASTCALL(span_exit), NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SpanCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ddagent._span.SpanCore",
    /* The text signature lets inspect.signature() describe Span as it did a Python class. */
    .tp_doc = "SpanCore(tracer, name, service=None, resource=None, span_type=None, "
              "trace_id=None, span_id=None, parent_id=None, start=None)\n--\n\n"
              "The native twin of ddagent.span.PythonSpanCore (see ddagent/_span.c).",
    .tp_basicsize = sizeof(SpanObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)span_init,
    .tp_dealloc = (destructor)span_dealloc,
    .tp_traverse = (traverseproc)span_traverse,
    .tp_clear = (inquiry)span_clear,
    .tp_members = span_members,
    .tp_methods = span_methods,
    .tp_getset = span_getset,
};

/* -- the tracer's per-span path: TracerCore ------------------------------------------------
 *
 * The native twin of tracer.PythonTracerCore: Tracer.trace() and Tracer._on_span_finish(), the two
 * calls every span makes into the tracer. As for spans, only the usual case runs here (a span
 * under the active one or a new trace, created without child_of; a finished span whose trace
 * needs nothing but the default sampler's decision and the chunk tags) and every other call goes
 * to the Python twin, or to the Tracer's own Python methods (_new_span, _send_chunk) for the part
 * that is not usual. It exists for speed: the two Python methods and the sampler's decide() cost
 * ~11k instructions of a single-span trace's ~35k (callgrind, see bench/README.md).
 *
 * The fields the fast paths read on every span are members (Python's __slots__ in the twin), so
 * that reading them is a pointer read rather than a dict lookup. */

typedef struct {
    PyObject_HEAD
    PyObject *config, *enabled, *open_traces, *sampler, *agent_sampler, *writer, *span_tags;
    PyObject *debug_logging, *chunk_observers, *shut_down;
} TracerObject;

#define TRACER_FIELD_COUNT 10

static PyTypeObject TracerCoreType;

/* What the fast paths use from Python, given once by tracer.py (use_tracer_twin). */
static struct {
    PyObject *trace, *on_span_finish; /* PythonTracerCore's methods */
    PyTypeObject *span_class; /* span.Span, a subclass of SpanCore: what trace() creates */
    PyObject *active_span; /* context.ACTIVE_SPAN, a ContextVar */
    PyObject *root_meta, *root_metrics; /* tracer._ROOT_META and _ROOT_METRICS */
    PyObject *count_single_span_trace; /* tracer._FINISHED_ONE_SPAN */
} tracer_twin;

static PyObject *str_lone, *str_root, *str_service, *str_version, *str_by_service;
static PyObject *str_closed_reason, *str_span_started, *str_trace_of;
static PyObject *str_new_span, *str_span_finished, *str_send_chunk, *str_write;
static PyObject *str_internal_error, *str_doing_finish, *str_prev_active, *str_finished_attr;
static PyObject *str_dd_p_dm, *str_agent_psr, *str_top_level, *sixty_four, *one_float;
static PyObject *priority_keep, *priority_reject, *mechanism_default, *mechanism_agent_rate;
static PyObject *trace_keywords[5]; /* trace()'s parameters, by position */

#define KNUTH_FACTOR 1111111111111111111ULL

static int
tracer_ready(TracerObject *self)
{
    /* unset: a subclass that did not run Tracer.__init__ (the twin says what fails) */
    return all_fields_set((PyObject *)self, TRACER_FIELD_COUNT)
        && tracer_twin.span_class != NULL;
}

/* trace()'s arguments by position (name, service, resource, span_type, child_of); 0 when they
 * are not simply that (an unknown or repeated keyword: the twin raises the TypeError). */
static int
trace_arguments(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject **arg)
{
    if (nargs > 5) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        arg[i] = args[i];
    }
    Py_ssize_t keywords = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t k = 0; k < keywords; k++) {
        PyObject *keyword = PyTuple_GET_ITEM(kwnames, k);
        int position = -1;
        for (int i = 0; i < 5 && position < 0; i++) {
            if (keyword == trace_keywords[i]) { /* call sites' keywords are interned */
                position = i;
            }
        }
        if (position < nargs) { /* unknown (-1), or given twice */
            return 0;
        }
        arg[position] = args[nargs + k];
    }
    return arg[0] != NULL;
}

/* `service or self.config.service` */
static PyObject *
service_or_default(TracerObject *self, PyObject *service)
{
    int given = service == Py_None ? 0 : PyObject_IsTrue(service);
    if (given < 0) {
        return NULL;
    }
    return given ? Py_NewRef(service) : PyObject_GetAttr(self->config, str_service);
}

/* A new trace's root: alone in its trace until a child starts (see OpenTraces.lone). */
static PyObject *
start_root(TracerObject *self, PyObject *name, PyObject *service, PyObject *resource,
           PyObject *span_type)
{
    PyObject *lone = PyObject_GetAttr(self->open_traces, str_lone);
    if (lone == NULL) {
        return NULL;
    }
    service = service_or_default(self, service);
    if (service == NULL) {
        Py_DECREF(lone);
        return NULL;
    }
    PyTypeObject *cls = tracer_twin.span_class;
    SpanObject *span = (SpanObject *)cls->tp_alloc(cls, 0);
    if (span == NULL
        || fill_span(span, (PyObject *)self, name, service, resource, span_type, NULL, NULL,
                     Py_None) < 0) {
        Py_XDECREF(span);
        Py_DECREF(service);
        Py_DECREF(lone);
        return NULL;
    }
    Py_DECREF(service);
    Py_SETREF(span->trace, lone);
    return (PyObject *)span;
}

/* A span under the active span `parent`, in the usual case (a native span of this tracer, whose
 * trace has an open buffer or none yet); NULL with no exception set otherwise: Tracer._new_span's
 * case. */
static PyObject *
start_child(TracerObject *self, PyObject *parent, PyObject *name, PyObject *service,
            PyObject *resource, PyObject *span_type)
{
    if (!PyObject_TypeCheck(parent, tracer_twin.span_class)) {
        return NULL;
    }
    SpanObject *parent_span = (SpanObject *)parent;
    PyObject *trace = parent_span->trace;
    if (parent_span->tracer != (PyObject *)self || trace == NULL || trace == Py_None
        || parent_span->trace_id == NULL || parent_span->span_id == NULL
        || parent_span->service == NULL) {
        return NULL;
    }
    Py_INCREF(trace);
    PyObject *lone = PyObject_GetAttr(self->open_traces, str_lone);
    PyObject *closed = PyObject_GetAttr(trace, str_closed_reason);
    Py_XDECREF(lone); /* only compared */
    Py_XDECREF(closed);
    if (lone == NULL || closed == NULL || closed != Py_None) {
        Py_DECREF(trace); /* a closed buffer: _new_span's case */
        return NULL;
    }
    if (trace == lone) { /* the parent was alone in its trace until now: it gets a buffer */
        Py_SETREF(trace, PyObject_CallMethodOneArg((PyObject *)self, str_trace_of, parent));
        if (trace == NULL) {
            return NULL;
        }
    }
    int given = service == Py_None ? 0 : PyObject_IsTrue(service);
    if (given < 0) {
        Py_DECREF(trace);
        return NULL;
    }
    PyTypeObject *cls = tracer_twin.span_class;
    SpanObject *span = (SpanObject *)cls->tp_alloc(cls, 0);
    if (span == NULL
        || fill_span(span, (PyObject *)self, name, given ? service : parent_span->service,
                     resource, span_type, parent_span->trace_id, NULL,
                     parent_span->span_id) < 0) {
        Py_XDECREF(span);
        Py_DECREF(trace);
        return NULL;
    }
    Py_SETREF(span->parent, Py_NewRef(parent));
    Py_SETREF(span->trace, trace);
    PyObject *started = PyObject_CallMethodOneArg(trace, str_span_started, (PyObject *)span);
    if (started == NULL) {
        Py_DECREF(span);
        return NULL;
    }
    Py_DECREF(started);
    return (PyObject *)span;
}

static PyObject *
tracer_trace(TracerObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *arg[5] = {NULL, Py_None, Py_None, Py_None, Py_None};
    if (!tracer_ready(self) || !trace_arguments(args, nargs, kwnames, arg)
        || arg[4] != Py_None) {
        return delegate(tracer_twin.trace, (PyObject *)self, args, nargs, kwnames);
    }
    PyObject *active;
    if (PyContextVar_Get(tracer_twin.active_span, Py_None, &active) < 0) {
        return NULL;
    }
    PyObject *span;
    if (active == Py_None) {
        span = start_root(self, arg[0], arg[1], arg[2], arg[3]);
    }
    else {
        span = start_child(self, active, arg[0], arg[1], arg[2], arg[3]);
        if (span == NULL && !PyErr_Occurred()) {
            PyObject *call[6] = {(PyObject *)self, arg[0], active, arg[1], arg[2], arg[3]};
            span = PyObject_VectorcallMethod(str_new_span, call, 6, NULL);
        }
    }
    if (span == NULL) {
        Py_DECREF(active);
        return NULL;
    }
    /* span._prev_active = active; ACTIVE_SPAN.set(span) */
    if (PyObject_TypeCheck(span, &SpanCoreType)) {
        Py_XSETREF(((SpanObject *)span)->prev_active, active);
    }
    else {
        int stored = PyObject_SetAttr(span, str_prev_active, active);
        Py_DECREF(active);
        if (stored < 0) {
            Py_DECREF(span);
            return NULL;
        }
    }
    PyObject *token = PyContextVar_Set(tracer_twin.active_span, span);
    if (token == NULL) {
        Py_DECREF(span);
        return NULL;
    }
    Py_DECREF(token);
    return span;
}

/* If `span` is active, make active again the nearest span it was activated over that is still
 * open (the twin's loop over _prev_active). */
static int
deactivate(PyObject *span)
{
    PyObject *active;
    if (PyContextVar_Get(tracer_twin.active_span, Py_None, &active) < 0) {
        return -1;
    }
    Py_DECREF(active); /* only compared */
    if (active != span) {
        return 0;
    }
    PyObject *previous = Py_XNewRef(((SpanObject *)span)->prev_active);
    for (;;) {
        if (previous == NULL) { /* an unset slot, or a failed attribute read */
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_AttributeError, "_prev_active");
            }
            return -1;
        }
        if (previous == Py_None) {
            break;
        }
        int native = PyObject_TypeCheck(previous, &SpanCoreType);
        PyObject *finished = native ? Py_XNewRef(((SpanObject *)previous)->finished)
                                    : PyObject_GetAttr(previous, str_finished_attr);
        int is_finished = finished == NULL ? -1 : PyObject_IsTrue(finished);
        Py_XDECREF(finished);
        if (is_finished <= 0) {
            if (is_finished < 0) {
                if (!PyErr_Occurred()) {
                    PyErr_SetString(PyExc_AttributeError, "_finished");
                }
                Py_DECREF(previous);
                return -1;
            }
            break;
        }
        Py_SETREF(previous, native ? Py_XNewRef(((SpanObject *)previous)->prev_active)
                                   : PyObject_GetAttr(previous, str_prev_active));
    }
    PyObject *token = PyContextVar_Set(tracer_twin.active_span, previous);
    Py_DECREF(previous);
    if (token == NULL) {
        return -1;
    }
    Py_DECREF(token);
    return 0;
}

/* The default sampler's decision for the lone root `span`, as PrioritySampler.decide makes it:
 * sets *priority, *mechanism and *rate (borrowed; *rate is NULL when the agent gave none).
 * 0 when it is not known here (a service not looked up yet): the twin decides. */
static int
decide(TracerObject *self, SpanObject *span, PyObject **priority, PyObject **mechanism,
       PyObject **rate)
{
    PyObject *service = span->service;
    if (service != Py_None && !PyUnicode_CheckExact(service)) {
        return 0; /* its hash may run Python code */
    }
    PyObject *by_service = PyObject_GetAttr(self->agent_sampler, str_by_service);
    if (by_service == NULL) {
        return -1;
    }
    int known = 0;
    if (PyDict_CheckExact(by_service)) {
        PyObject *found = PyDict_GetItemWithError(by_service, service); /* borrowed */
        if (found == NULL && PyErr_Occurred()) {
            Py_DECREF(by_service);
            return -1;
        }
        if (found == Py_None) {
            *priority = priority_keep;
            *mechanism = mechanism_default;
            *rate = NULL;
            known = 1;
        }
        else if (found != NULL && PyTuple_CheckExact(found) && PyTuple_GET_SIZE(found) == 2
                 && PyLong_CheckExact(PyTuple_GET_ITEM(found, 1))
                 && PyLong_CheckExact(span->trace_id)) {
            /* keep if the hashed low 64 bits of the trace id are at most the threshold; a
             * threshold beyond 64 bits (rate 1) keeps everything */
            PyObject *limit = PyTuple_GET_ITEM(found, 1);
            unsigned long long threshold = PyLong_AsUnsignedLongLong(limit);
            int keep_all = 0, keep_none = 0;
            if (threshold == (unsigned long long)-1 && PyErr_Occurred()) {
                PyErr_Clear();
                keep_none = PyObject_RichCompareBool(limit, zero, Py_LT) == 1;
                keep_all = !keep_none;
            }
            unsigned long long low = PyLong_AsUnsignedLongLongMask(span->trace_id);
            if (!(low == (unsigned long long)-1 && PyErr_Occurred())) {
                int keep = keep_all
                    || (!keep_none && (unsigned long long)(low * KNUTH_FACTOR) <= threshold);
                *priority = keep ? priority_keep : priority_reject;
                *mechanism = mechanism_agent_rate;
                *rate = PyTuple_GET_ITEM(found, 0);
                known = 1;
            }
            PyErr_Clear();
        }
    }
    /* `found` is borrowed from by_service, which the sampler may swap for a new dict at any
     * time: the tracer holds the rate (one reference) until it stores it. */
    if (known && *rate != NULL) {
        Py_INCREF(*rate);
    }
    Py_DECREF(by_service);
    return known;
}

/* The whole of _send_chunk for a root alone in its trace, in the usual case; 0 (having done
 * nothing) when the case is not usual. */
static int
send_lone_root(TracerObject *self, SpanObject *span)
{
    if (self->enabled != Py_True || self->shut_down != Py_False
        || self->sampler != self->agent_sampler || self->debug_logging != Py_False
        || !PyList_CheckExact(self->chunk_observers) || PyList_GET_SIZE(self->chunk_observers)
        || self->writer == Py_None || !PyTuple_CheckExact(self->span_tags)
        || PyTuple_GET_SIZE(self->span_tags) || span->parent != Py_None || span->meta == NULL
        || !PyDict_CheckExact(span->meta) || span->metrics == NULL
        || !PyDict_CheckExact(span->metrics) || span->trace_id == NULL
        || !PyLong_CheckExact(span->trace_id)) {
        return 0;
    }
    PyObject *version = PyObject_GetAttr(self->config, str_version);
    if (version == NULL) {
        return -1;
    }
    int versioned = version == Py_None ? 0 : PyObject_IsTrue(version);
    Py_DECREF(version);
    if (versioned != 0) { /* config.version tags the spans: the twin's _tag_spans */
        return versioned < 0 ? -1 : 0;
    }
    PyObject *priority, *mechanism, *rate;
    int decided = decide(self, span, &priority, &mechanism, &rate);
    if (decided <= 0) {
        return decided;
    }
    /* the chunk root's tags and metrics, cached by the twin (by second and by priority) */
    PyObject *high = PyNumber_Rshift(span->trace_id, sixty_four);
    if (high == NULL) {
        Py_XDECREF(rate);
        return -1;
    }
    PyObject *root_meta = PyDict_GetItemWithError(tracer_twin.root_meta, high);
    Py_DECREF(high);
    PyObject *root_metrics = root_meta == NULL
        ? NULL : PyDict_GetItemWithError(tracer_twin.root_metrics, priority);
    if (root_meta == NULL || root_metrics == NULL) {
        Py_XDECREF(rate);
        return PyErr_Occurred() ? -1 : 0;
    }
    Py_INCREF(root_meta);
    Py_INCREF(root_metrics);
    int failed = 0;
    PyObject *counted = PyObject_CallNoArgs(tracer_twin.count_single_span_trace);
    Py_XDECREF(counted);
    failed = counted == NULL
        || (rate != NULL && PyDict_SetItem(span->metrics, str_agent_psr, rate) < 0)
        || (priority == priority_keep
            && PyDict_SetItem(span->meta, str_dd_p_dm, mechanism) < 0)
        || PyDict_Update(span->meta, root_meta) < 0
        || PyDict_Update(span->metrics, root_metrics) < 0
        || PyDict_SetItem(span->metrics, str_top_level, one_float) < 0;
    Py_XDECREF(rate);
    Py_DECREF(root_meta);
    Py_DECREF(root_metrics);
    if (failed) {
        return -1;
    }
    PyObject *chunk = PyList_New(1);
    if (chunk == NULL) {
        return -1;
    }
    PyList_SET_ITEM(chunk, 0, Py_NewRef((PyObject *)span));
    PyObject *writer = Py_NewRef(self->writer);
    PyObject *call[2] = {writer, chunk};
    PyObject *written = PyObject_VectorcallMethod(str_write, call, 2, NULL);
    Py_DECREF(writer);
    Py_DECREF(chunk);
    if (written == NULL) {
        return -1;
    }
    Py_DECREF(written);
    return 1;
}

/* _on_span_finish's work; -1 with an exception set on failure. */
static int
finish_span(TracerObject *self, SpanObject *span)
{
    if (deactivate((PyObject *)span) < 0) {
        return -1;
    }
    PyObject *trace = span->trace;
    if (trace == NULL || trace == Py_None) { /* built by hand: nothing to send */
        return 0;
    }
    Py_INCREF(trace);
    PyObject *lone = PyObject_GetAttr(self->open_traces, str_lone);
    if (lone == NULL) {
        Py_DECREF(trace);
        return -1;
    }
    Py_DECREF(lone); /* only compared */
    PyObject *result = NULL;
    if (trace == lone) {
        int sent = send_lone_root(self, span);
        if (sent != 0) {
            Py_DECREF(trace);
            return sent < 0 ? -1 : 0;
        }
        PyObject *chunk = PyList_New(1);
        if (chunk != NULL) {
            PyList_SET_ITEM(chunk, 0, Py_NewRef((PyObject *)span));
            PyObject *call[4] = {(PyObject *)self, chunk, (PyObject *)span, Py_None};
            result = PyObject_VectorcallMethod(str_send_chunk, call, 4, NULL);
            Py_DECREF(chunk);
        }
    }
    else {
        /* root before span_finished, which forgets it when the trace completes */
        PyObject *root = PyObject_GetAttr(trace, str_root);
        PyObject *chunk = root == NULL
            ? NULL : PyObject_CallMethodOneArg(trace, str_span_finished, (PyObject *)span);
        if (chunk != NULL) {
            int ready = PyObject_IsTrue(chunk);
            if (ready > 0) {
                PyObject *call[4] = {(PyObject *)self, chunk, root, trace};
                result = PyObject_VectorcallMethod(str_send_chunk, call, 4, NULL);
            }
            else if (ready == 0) {
                result = Py_NewRef(Py_None);
            }
            Py_DECREF(chunk);
        }
        Py_XDECREF(root);
    }
    Py_DECREF(trace);
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

static PyObject *
tracer_on_span_finish(TracerObject *self, PyObject *span)
{
    if (!tracer_ready(self) || !PyObject_TypeCheck(span, &SpanCoreType)) {
        return delegate(tracer_twin.on_span_finish, (PyObject *)self, &span, 1, NULL);
    }
    if (finish_span(self, (SpanObject *)span) == 0) {
        Py_RETURN_NONE;
    }
    /* As the twin's `except Exception`: counted and logged, never raised into the application.
     * Anything else (KeyboardInterrupt, SystemExit) goes on. */
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        return NULL;
    }
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *error = PyErr_GetRaisedException();
#else
    PyObject *type, *error, *traceback;
    PyErr_Fetch(&type, &error, &traceback);
    PyErr_NormalizeException(&type, &error, &traceback);
    if (error != NULL && traceback != NULL) {
        PyException_SetTraceback(error, traceback);
    }
    Py_XDECREF(type);
    Py_XDECREF(traceback);
#endif
    PyObject *call[3] = {(PyObject *)self, str_doing_finish, error != NULL ? error : Py_None};
    PyObject *logged = PyObject_VectorcallMethod(str_internal_error, call, 3, NULL);
    Py_XDECREF(error);
    if (logged == NULL) {
        return NULL;
    }
    Py_DECREF(logged);
    Py_RETURN_NONE;
}

static int
tracer_traverse(TracerObject *self, visitproc visit, void *arg)
{
    return traverse_fields((PyObject *)self, TRACER_FIELD_COUNT, visit, arg);
}

static int
tracer_clear(TracerObject *self)
{
    return clear_fields((PyObject *)self, TRACER_FIELD_COUNT);
}

static void
tracer_dealloc(TracerObject *self)
{
    PyObject_GC_UnTrack(self);
    tracer_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

#define TRACER_MEMBER(name, field) \
    {name, Py_T_OBJECT_EX, offsetof(TracerObject, field), 0, NULL}

static PyMemberDef tracer_members[] = {
    TRACER_MEMBER("config", config),
    TRACER_MEMBER("enabled", enabled),
    TRACER_MEMBER("_open_traces", open_traces),
    TRACER_MEMBER("sampler", sampler),
    TRACER_MEMBER("agent_sampler", agent_sampler),
    TRACER_MEMBER("_writer", writer),
    TRACER_MEMBER("_span_tags", span_tags),
    TRACER_MEMBER("debug_logging", debug_logging),
    TRACER_MEMBER("chunk_observers", chunk_observers),
    TRACER_MEMBER("_shut_down", shut_down),
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef tracer_methods[] = {
    /* The text signature lets inspect.signature() and help() describe it as the twin's. */
    {"trace", FASTCALL(tracer_trace),
     "trace($self, /, name, service=None, resource=None, span_type=None, child_of=None)\n--\n\n"
     "Start a span, child of ``child_of`` or else of the active span, and make it active.\n\n"
     "Use it as a context manager, or call ``finish()``."},
    {"_on_span_finish", (PyCFunction)tracer_on_span_finish, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject TracerCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ddagent._span.TracerCore",
    .tp_doc = "The native twin of ddagent.tracer.PythonTracerCore (see ddagent/_span.c).",
    .tp_basicsize = sizeof(TracerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)tracer_dealloc,
    .tp_traverse = (traverseproc)tracer_traverse,
    .tp_clear = (inquiry)tracer_clear,
    .tp_members = tracer_members,
    .tp_methods = tracer_methods,
};

static PyObject *
use_tracer_twin(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 6 || !PyType_Check(args[1])
        || !PyType_IsSubtype((PyTypeObject *)args[1], &SpanCoreType)
        || !PyContextVar_CheckExact(args[2]) || !PyDict_CheckExact(args[3])
        || !PyDict_CheckExact(args[4])) {
        PyErr_SetString(PyExc_TypeError,
                        "use_tracer_twin(cls, span_class, active_span, root_meta, root_metrics, "
                        "count_single_span_trace)");
        return NULL;
    }
    PyObject *trace = PyObject_GetAttrString(args[0], "trace");
    PyObject *on_span_finish = PyObject_GetAttrString(args[0], "_on_span_finish");
    if (trace == NULL || on_span_finish == NULL) {
        Py_XDECREF(trace);
        Py_XDECREF(on_span_finish);
        return NULL;
    }
    Py_XSETREF(tracer_twin.trace, trace);
    Py_XSETREF(tracer_twin.on_span_finish, on_span_finish);
    Py_XSETREF(tracer_twin.span_class, (PyTypeObject *)Py_NewRef(args[1]));
    Py_XSETREF(tracer_twin.active_span, Py_NewRef(args[2]));
    Py_XSETREF(tracer_twin.root_meta, Py_NewRef(args[3]));
    Py_XSETREF(tracer_twin.root_metrics, Py_NewRef(args[4]));
    Py_XSETREF(tracer_twin.count_single_span_trace, Py_NewRef(args[5]));
    Py_RETURN_NONE;
}

static int
init_tracer_constants(void)
{
    static const char *const keywords[5] = {"name", "service", "resource", "span_type",
                                            "child_of"};
    for (int i = 0; i < 5; i++) {
        if ((trace_keywords[i] = PyUnicode_InternFromString(keywords[i])) == NULL) {
            return -1;
        }
    }
    struct {
        PyObject **target;
        const char *text;
    } strings[] = {
        {&str_lone, "lone"}, {&str_root, "root"}, {&str_service, "service"},
        {&str_version, "version"}, {&str_by_service, "_by_service"},
        {&str_closed_reason, "closed_reason"}, {&str_span_started, "span_started"},
        {&str_trace_of, "_trace_of"},
        {&str_new_span, "_new_span"}, {&str_span_finished, "span_finished"},
        {&str_send_chunk, "_send_chunk"}, {&str_write, "write"},
        {&str_internal_error, "_internal_error"}, {&str_doing_finish, "finishing a span"},
        {&str_prev_active, "_prev_active"}, {&str_finished_attr, "_finished"},
        {&str_dd_p_dm, "_dd.p.dm"}, {&str_agent_psr, "_dd.agent_psr"},
        {&str_top_level, "_dd.top_level"},
        /* sampler.py's MECHANISM_DEFAULT and MECHANISM_AGENT_RATE */
        {&mechanism_default, "-0"}, {&mechanism_agent_rate, "-1"},
    };
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) {
        if ((*strings[i].target = PyUnicode_InternFromString(strings[i].text)) == NULL) {
            return -1;
        }
    }
    sixty_four = PyLong_FromLong(64);
    one_float = PyFloat_FromDouble(1.0);
    priority_keep = PyLong_FromLong(1);   /* sampler.AUTO_KEEP */
    priority_reject = PyLong_FromLong(0); /* sampler.AUTO_REJECT */
    if (sixty_four == NULL || one_float == NULL || priority_keep == NULL
        || priority_reject == NULL) {
        return -1;
    }
    return PyType_Ready(&TracerCoreType);
}

/* -- a trace's buffer: TraceBufferCore -----------------------------------------------------
 *
 * The native twin of context.PythonTraceBufferCore: the fields of a trace's buffer and the two
 * calls every span of a buffered trace makes, span_started and span_finished. They run under the
 * buffer's lock (a threading.Lock the Python methods take too), exactly as the twin's do; a span
 * finishing in a closed buffer, or a field in a state the buffer never leaves it in, goes to the
 * twin. It exists for speed: the two Python methods cost ~4.5k instructions of a child span's
 * ~19k (callgrind, a trace of 100 spans; see bench/README.md). */

typedef struct {
    PyObject_HEAD
    /* in the order of context.PythonTraceBufferCore.__slots__ */
    PyObject *trace_id, *root, *priority, *tags, *origin, *tracestate, *closed_reason;
    PyObject *lock, *open, *finished, *registry;
} TraceBufferObject;

#define BUFFER_FIELD_COUNT 11

static PyTypeObject TraceBufferCoreType;

static struct {
    PyObject *span_started, *span_finished; /* PythonTraceBufferCore's methods */
} buffer_twin;

static PyObject *str_acquire, *str_release, *str_add, *str_close, *str_evicted;
static PyObject *str_partial_flush_min_spans, *str_traces, *one;

static int
buffer_ready(TraceBufferObject *self)
{
    return all_fields_set((PyObject *)self, BUFFER_FIELD_COUNT) && PyLong_CheckExact(self->open) && PyList_CheckExact(self->finished)
        && buffer_twin.span_finished != NULL;
}

/* lock.acquire() or lock.release() */
static int
call_lock(TraceBufferObject *self, PyObject *method)
{
    PyObject *result = PyObject_CallMethodNoArgs(self->lock, method);
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

/* lock.release(), keeping the exception being raised, if any (its own, if it fails). */
static int
release_lock(TraceBufferObject *self)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *raised = PyErr_GetRaisedException();
    int released = call_lock(self, str_release);
    if (raised == NULL) {
        return released;
    }
    if (released == 0) {
        PyErr_SetRaisedException(raised);
    }
    else {
        Py_DECREF(raised);
    }
    return -1;
#else
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    int released = call_lock(self, str_release);
    if (type == NULL) {
        return released;
    }
    if (released == 0) {
        PyErr_Restore(type, value, traceback);
    }
    else {
        Py_DECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(traceback);
    }
    return -1;
#endif
}

/* self._open + delta, stored; the new count, or -1 with an exception set. */
static long long
add_open(TraceBufferObject *self, int delta)
{
    PyObject *count = delta > 0 ? PyNumber_Add(self->open, one)
                                : PyNumber_Subtract(self->open, one);
    if (count == NULL) {
        return -1;
    }
    long long value = PyLong_AsLongLong(count);
    Py_SETREF(self->open, count);
    return value; /* an exact int's conversion fails only beyond 64 bits: never here */
}

static PyObject *
buffer_span_started(TraceBufferObject *self, PyObject *span)
{
    if (!buffer_ready(self)) {
        return delegate(buffer_twin.span_started, (PyObject *)self, &span, 1, NULL);
    }
    if (call_lock(self, str_acquire) < 0) {
        return NULL;
    }
    PyObject *victim = NULL;
    if (self->root == Py_None) {
        Py_SETREF(self->root, Py_NewRef(span));
    }
    long long open = add_open(self, 1);
    if (open == 1) { /* (re)opened: registered again (OpenTraces.add may name a victim) */
        PyObject *call[2] = {self->registry, (PyObject *)self};
        victim = PyObject_VectorcallMethod(str_add, call, 2, NULL);
    }
    int failed = open < 0 || (open == 1 && victim == NULL);
    if (release_lock(self) < 0 || failed) {
        Py_XDECREF(victim);
        return NULL;
    }
    if (victim != NULL && victim != Py_None) {
        PyObject *closed = PyObject_CallMethodOneArg(victim, str_close, str_evicted);
        Py_DECREF(victim);
        if (closed == NULL) {
            return NULL;
        }
        Py_DECREF(closed);
        Py_RETURN_NONE;
    }
    Py_XDECREF(victim);
    Py_RETURN_NONE;
}

/* Under the lock: the chunk ready to send (a new reference), None, or NULL on an error. */
static PyObject *
take_finished(TraceBufferObject *self, PyObject *span)
{
    if (PyList_Append(self->finished, span) < 0) {
        return NULL;
    }
    long long open = add_open(self, -1);
    if (open < 0) {
        return NULL;
    }
    if (open) {
        PyObject *limit = PyObject_GetAttr(self->registry, str_partial_flush_min_spans);
        if (limit == NULL) {
            return NULL;
        }
        PyObject *waiting = PyLong_FromSsize_t(PyList_GET_SIZE(self->finished));
        int early = waiting == NULL ? -1 : PyObject_RichCompareBool(waiting, limit, Py_LT);
        Py_XDECREF(waiting);
        Py_DECREF(limit);
        if (early != 0) {
            return early < 0 ? NULL : Py_NewRef(Py_None);
        }
    }
    else {
        /* the trace is complete: unregistered, and its root let go (see the twin) */
        PyObject *traces = PyObject_GetAttr(self->registry, str_traces);
        if (traces == NULL) {
            return NULL;
        }
        int unregistered = PyDict_CheckExact(traces)
            ? PyDict_DelItem(traces, (PyObject *)self) : -1;
        Py_DECREF(traces);
        if (unregistered < 0) {
            if (!PyErr_ExceptionMatches(PyExc_KeyError)) {
                return NULL;
            }
            PyErr_Clear();
        }
        Py_SETREF(self->root, Py_NewRef(Py_None));
    }
    PyObject *fresh = PyList_New(0);
    if (fresh == NULL) {
        return NULL;
    }
    PyObject *chunk = self->finished;
    self->finished = fresh;
    return chunk;
}

static PyObject *
buffer_span_finished(TraceBufferObject *self, PyObject *span)
{
    if (!buffer_ready(self) || self->closed_reason != Py_None) {
        /* a closed buffer never opens again: the twin counts the span as dropped */
        return delegate(buffer_twin.span_finished, (PyObject *)self, &span, 1, NULL);
    }
    if (call_lock(self, str_acquire) < 0) {
        return NULL;
    }
    PyObject *chunk;
    if (self->closed_reason == Py_None) {
        chunk = take_finished(self, span);
    }
    else { /* closed meanwhile */
        chunk = Py_NewRef(Py_NotImplemented);
    }
    if (release_lock(self) < 0) {
        Py_XDECREF(chunk);
        return NULL;
    }
    if (chunk == Py_NotImplemented) {
        Py_DECREF(chunk);
        return delegate(buffer_twin.span_finished, (PyObject *)self, &span, 1, NULL);
    }
    return chunk;
}

static int
buffer_traverse(TraceBufferObject *self, visitproc visit, void *arg)
{
    return traverse_fields((PyObject *)self, BUFFER_FIELD_COUNT, visit, arg);
}

static int
buffer_clear(TraceBufferObject *self)
{
    return clear_fields((PyObject *)self, BUFFER_FIELD_COUNT);
}

static void
buffer_dealloc(TraceBufferObject *self)
{
    PyObject_GC_UnTrack(self);
    buffer_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

#define BUFFER_MEMBER(name, field) \
    {name, Py_T_OBJECT_EX, offsetof(TraceBufferObject, field), 0, NULL}

static PyMemberDef buffer_members[] = {
    BUFFER_MEMBER("trace_id", trace_id),
    BUFFER_MEMBER("root", root),
    BUFFER_MEMBER("priority", priority),
    BUFFER_MEMBER("tags", tags),
    BUFFER_MEMBER("origin", origin),
    BUFFER_MEMBER("tracestate", tracestate),
    BUFFER_MEMBER("closed_reason", closed_reason),
    BUFFER_MEMBER("_lock", lock),
    BUFFER_MEMBER("_open", open),
    BUFFER_MEMBER("_finished", finished),
    BUFFER_MEMBER("_registry", registry),
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef buffer_methods[] = {
    {"span_started", (PyCFunction)buffer_span_started, METH_O,
     "span_started(span): as context.PythonTraceBufferCore.span_started"},
    {"span_finished", (PyCFunction)buffer_span_finished, METH_O,
     "span_finished(span): as context.PythonTraceBufferCore.span_finished"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject TraceBufferCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ddagent._span.TraceBufferCore",
    .tp_doc = "The native twin of ddagent.context.PythonTraceBufferCore (see ddagent/_span.c).",
    .tp_basicsize = sizeof(TraceBufferObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)buffer_dealloc,
    .tp_traverse = (traverseproc)buffer_traverse,
    .tp_clear = (inquiry)buffer_clear,
    .tp_members = buffer_members,
    .tp_methods = buffer_methods,
};

static PyObject *
use_trace_buffer_twin(PyObject *module, PyObject *cls)
{
    (void)module;
    PyObject *started = PyObject_GetAttrString(cls, "span_started");
    PyObject *finished = PyObject_GetAttrString(cls, "span_finished");
    if (started == NULL || finished == NULL) {
        Py_XDECREF(started);
        Py_XDECREF(finished);
        return NULL;
    }
    Py_XSETREF(buffer_twin.span_started, started);
    Py_XSETREF(buffer_twin.span_finished, finished);
    Py_RETURN_NONE;
}

static int
init_buffer_constants(void)
{
    struct {
        PyObject **target;
        const char *text;
    } strings[] = {
        {&str_acquire, "acquire"}, {&str_release, "release"}, {&str_add, "add"},
        {&str_close, "close"}, {&str_evicted, "open_trace_evicted"},
        {&str_partial_flush_min_spans, "partial_flush_min_spans"}, {&str_traces, "_traces"},
    };
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) {
        if ((*strings[i].target = PyUnicode_InternFromString(strings[i].text)) == NULL) {
            return -1;
        }
    }
    if ((one = PyLong_FromLong(1)) == NULL) {
        return -1;
    }
    return PyType_Ready(&TraceBufferCoreType);
}

/* -- the module ---------------------------------------------------------------------------- */

static PyObject *
use_python_twin(PyObject *module, PyObject *cls)
{
    (void)module;
    PyObject *init = PyObject_GetAttrString(cls, "__init__");
    PyObject *set_tag = PyObject_GetAttrString(cls, "set_tag");
    PyObject *set_metric = PyObject_GetAttrString(cls, "set_metric");
    PyObject *finish = PyObject_GetAttrString(cls, "finish");
    PyObject *exit = PyObject_GetAttrString(cls, "__exit__");
    if (init == NULL || set_tag == NULL || set_metric == NULL || finish == NULL || exit == NULL) {
        Py_XDECREF(init);
        Py_XDECREF(set_tag);
        Py_XDECREF(set_metric);
        Py_XDECREF(finish);
        Py_XDECREF(exit);
        return NULL;
    }
    Py_XSETREF(twin.init, init);
    Py_XSETREF(twin.set_tag, set_tag);
    Py_XSETREF(twin.set_metric, set_metric);
    Py_XSETREF(twin.finish, finish);
    Py_XSETREF(twin.exit, exit);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"use_python_twin", use_python_twin, METH_O,
     "use_python_twin(cls): the class whose methods take the calls SpanCore leaves to Python."},
    {"use_tracer_twin", (PyCFunction)(void (*)(void))use_tracer_twin, METH_FASTCALL,
     "use_tracer_twin(cls, span_class, active_span, root_meta, root_metrics, "
     "count_single_span_trace):\nwhat TracerCore leaves to Python, and what it uses from it."},
    {"use_trace_buffer_twin", use_trace_buffer_twin, METH_O,
     "use_trace_buffer_twin(cls): the class whose methods take the calls TraceBufferCore leaves\n"
     "to Python."},
    {"seed", seed, METH_O, "seed(bytes): reseed the span and trace id generator (8+ bytes)."},
    {"random_bits", random_bits, METH_NOARGS,
     "random_bits() -> int: 64 random bits from the id generator (never zero)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_definition = {
    PyModuleDef_HEAD_INIT, "ddagent._span",
    "The native twins of ddagent's span, tracer and trace buffer cores (see ddagent/_span.c).",
    -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__span(void)
{
    Py_BUILD_ASSERT(sizeof(SpanObject) == sizeof(PyObject) + FIELD_COUNT * sizeof(PyObject *));
    Py_BUILD_ASSERT(sizeof(TracerObject)
                    == sizeof(PyObject) + TRACER_FIELD_COUNT * sizeof(PyObject *));
    Py_BUILD_ASSERT(sizeof(TraceBufferObject)
                    == sizeof(PyObject) + BUFFER_FIELD_COUNT * sizeof(PyObject *));
    str_on_span_finish = PyUnicode_InternFromString("_on_span_finish");
    str_finish = PyUnicode_InternFromString("finish");
    zero = PyLong_FromLong(0);
    if (str_on_span_finish == NULL || str_finish == NULL || zero == NULL
        || PyType_Ready(&SpanCoreType) < 0 || init_tracer_constants() < 0
        || init_buffer_constants() < 0) {
        return NULL;
    }
    native_finish = PyDict_GetItemWithError(SpanCoreType.tp_dict, str_finish); /* borrowed */
    if (native_finish == NULL) {
        return NULL;
    }
    Py_INCREF(native_finish);
    /* The fields' names where a __slots__ class keeps them, so that copy and pickle (copyreg)
     * copy a span's fields as they do a Python core's. */
    PyObject *slot_names = PyTuple_New(FIELD_COUNT);
    if (slot_names == NULL) {
        return NULL;
    }
    for (int i = 0; i < FIELD_COUNT; i++) {
        PyObject *name = PyUnicode_InternFromString(span_members[i].name);
        if (name == NULL) {
            Py_DECREF(slot_names);
            return NULL;
        }
        PyTuple_SET_ITEM(slot_names, i, name);
    }
    int added = PyDict_SetItemString(SpanCoreType.tp_dict, "__slots__", slot_names);
    Py_DECREF(slot_names);
    if (added < 0) {
        return NULL;
    }
    PyType_Modified(&SpanCoreType);
    PyObject *module = PyModule_Create(&module_definition);
    if (module == NULL) {
        return NULL;
    }
    Py_INCREF(&SpanCoreType);
    if (PyModule_AddObject(module, "SpanCore", (PyObject *)&SpanCoreType) < 0) {
        Py_DECREF(&SpanCoreType);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(&TracerCoreType);
    if (PyModule_AddObject(module, "TracerCore", (PyObject *)&TracerCoreType) < 0) {
        Py_DECREF(&TracerCoreType);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(&TraceBufferCoreType);
    if (PyModule_AddObject(module, "TraceBufferCore", (PyObject *)&TraceBufferCoreType) < 0) {
        Py_DECREF(&TraceBufferCoreType);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
