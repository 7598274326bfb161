/* Direct calls into libunicorn for the engine's hottest path.
 *
 * A ctypes call costs about 4,000 host instructions of argument conversion and libffi set-up
 * per call, several times the work of the Unicorn entry points it wraps (a run to the next
 * patch site, a register read, a context restore), and a schedule makes about 160 of them.
 * These wrappers call the same C entry points, found by the Unicorn binding and handed over as
 * addresses by bind(), so nothing here links against libunicorn and the binding stays the one
 * that loads it. The engine falls back to ctypes when this module is not built
 * (fuzzer/arch/hotpath.py), with identical results.
 *
 * The interrupt hook is here too: it records the vector for Python to report after the run,
 * instead of a ctypes callback into Python in the middle of the emulation.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

typedef int (*emu_start_fn)(void *uc, uint64_t begin, uint64_t until, uint64_t timeout, size_t count);
typedef int (*emu_stop_fn)(void *uc);
typedef int (*reg_read_fn)(void *uc, int regid, void *value);
typedef int (*reg_write_fn)(void *uc, int regid, const void *value);
typedef int (*ctx_fn)(void *uc, void *context);

static emu_start_fn p_emu_start;
static emu_stop_fn p_emu_stop;
static reg_read_fn p_reg_read;
static reg_write_fn p_reg_write;
static ctx_fn p_ctx_save;
static ctx_fn p_ctx_restore;

/* an `until` address the code never reaches: runs end by count, a hook's stop or a fault */
#define UNTIL 0xFFFFFFFFFFFF0000ULL

/* indices into the per-CPU int64 state array shared with the site hook (hotpath.py) */
#define ST_SKIP 0
#define ST_HIT_ADDR 1
#define ST_HIT 2
#define ST_ENABLED 3
#define ST_INTR 4
#define ST_INTNO 5
#define ST_STATUS 6
#define DETAILS (-2)

/* Every call's prologue: the argument count, and bind() done. */
static int usable(Py_ssize_t n, Py_ssize_t want, const char *usage)
{
    if (n != want) {
        PyErr_SetString(PyExc_TypeError, usage);
        return 0;
    }
    if (p_emu_start == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_unicorn_calls.bind() was not called");
        return 0;
    }
    return 1;
}

static PyObject *bind(PyObject *self, PyObject *const *args, Py_ssize_t n)
{
    if (n != 6) {
        PyErr_SetString(PyExc_TypeError, "bind(emu_start, emu_stop, reg_read, reg_write, "
                                         "context_save, context_restore)");
        return NULL;
    }
    void *p[6];
    for (int i = 0; i < 6; i++) {
        p[i] = PyLong_AsVoidPtr(args[i]);
        if (p[i] == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "null function address");
            return NULL;
        }
    }
    p_emu_start = (emu_start_fn)p[0];
    p_emu_stop = (emu_stop_fn)p[1];
    p_reg_read = (reg_read_fn)p[2];
    p_reg_write = (reg_write_fn)p[3];
    p_ctx_save = (ctx_fn)p[4];
    p_ctx_restore = (ctx_fn)p[5];
    Py_RETURN_NONE;
}

/* run(uc, st, begin, count, skip) -> the address of the site the CPU stopped in front of, -1
 * when the count ran out, or DETAILS (-2) when a trap or an emulator error needs a look at st
 * (ST_INTR, ST_INTNO, ST_STATUS). UnicornCpu.run() in one call: the hook state is set up
 * around uc_emu_start as the Python fallback does it. */
static PyObject *run(PyObject *self, PyObject *const *args, Py_ssize_t n)
{
    if (!usable(n, 5, "run(uc, st, begin, count, skip)"))
        return NULL;
    void *uc = PyLong_AsVoidPtr(args[0]);
    int64_t *st = (int64_t *)PyLong_AsVoidPtr(args[1]);
    uint64_t begin = PyLong_AsUnsignedLongLong(args[2]);
    size_t count = PyLong_AsSize_t(args[3]);
    long long skip = PyLong_AsLongLong(args[4]);
    if (PyErr_Occurred())
        return NULL;
    st[ST_SKIP] = skip;
    st[ST_HIT] = 0;
    int status = p_emu_start(uc, begin, UNTIL, 0, count);
    st[ST_ENABLED] = 1;
    st[ST_STATUS] = status;
    if (status != 0 || st[ST_INTR])
        return PyLong_FromLong(DETAILS);
    return PyLong_FromLongLong(st[ST_HIT] ? st[ST_HIT_ADDR] : -1);
}

/* reg_read(uc, regid) -> value (registers up to 64 bits) */
static PyObject *reg_read(PyObject *self, PyObject *const *args, Py_ssize_t n)
{
    if (!usable(n, 2, "reg_read(uc, regid)"))
        return NULL;
    void *uc = PyLong_AsVoidPtr(args[0]);
    int reg = (int)PyLong_AsLong(args[1]);
    if (PyErr_Occurred())
        return NULL;
    uint64_t v = 0;
    int status = p_reg_read(uc, reg, &v);
    if (status != 0) {
        PyErr_Format(PyExc_RuntimeError, "uc_reg_read(%d) failed: %d", reg, status);
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(v);
}

/* reg_write(uc, regid, value) -> status */
static PyObject *reg_write(PyObject *self, PyObject *const *args, Py_ssize_t n)
{
    if (!usable(n, 3, "reg_write(uc, regid, value)"))
        return NULL;
    void *uc = PyLong_AsVoidPtr(args[0]);
    int reg = (int)PyLong_AsLong(args[1]);
    uint64_t v = PyLong_AsUnsignedLongLong(args[2]);
    if (PyErr_Occurred())
        return NULL;
    return PyLong_FromLong(p_reg_write(uc, reg, &v));
}

static PyObject *ctx_call(ctx_fn fn, PyObject *const *args, Py_ssize_t n, const char *usage)
{
    if (!usable(n, 2, usage))
        return NULL;
    void *uc = PyLong_AsVoidPtr(args[0]);
    void *ctx = PyLong_AsVoidPtr(args[1]);
    if (PyErr_Occurred())
        return NULL;
    return PyLong_FromLong(fn(uc, ctx));
}

/* context_save(uc, context) / context_restore(uc, context) -> status */
static PyObject *context_save(PyObject *self, PyObject *const *args, Py_ssize_t n)
{
    return ctx_call(p_ctx_save, args, n, "context_save(uc, context)");
}

static PyObject *context_restore(PyObject *self, PyObject *const *args, Py_ssize_t n)
{
    return ctx_call(p_ctx_restore, args, n, "context_restore(uc, context)");
}

/* UC_HOOK_INTR callback: void (uc_engine *uc, uint32_t intno, void *user_data). The trap
 * supersedes a site stop recorded earlier in the slice (it happened later). */
static void intr_hook(void *uc, uint32_t intno, void *user_data)
{
    int64_t *st = (int64_t *)user_data;
    st[ST_HIT] = 0;
    st[ST_INTR] = 1;
    st[ST_INTNO] = (int64_t)intno;
    p_emu_stop(uc);
}

static PyObject *intr_hook_address(PyObject *self, PyObject *unused)
{
    if (!usable(0, 0, "intr_hook_address()"))
        return NULL;
    return PyLong_FromVoidPtr((void *)intr_hook);
}

static PyMethodDef methods[] = {
    {"bind", (PyCFunction)(void (*)(void))bind, METH_FASTCALL, "Hand over libunicorn's entry points."},
    {"run", (PyCFunction)(void (*)(void))run, METH_FASTCALL, "A CPU's slice: uc_emu_start with the site hook's state"},
    {"reg_read", (PyCFunction)(void (*)(void))reg_read, METH_FASTCALL, "uc_reg_read of a register up to 64 bits"},
    {"reg_write", (PyCFunction)(void (*)(void))reg_write, METH_FASTCALL, "uc_reg_write of a register up to 64 bits"},
    {"context_save", (PyCFunction)(void (*)(void))context_save, METH_FASTCALL, "uc_context_save"},
    {"context_restore", (PyCFunction)(void (*)(void))context_restore, METH_FASTCALL, "uc_context_restore"},
    {"intr_hook_address", intr_hook_address, METH_NOARGS, "Address of the native UC_HOOK_INTR callback"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_unicorn_calls",
    "Direct calls into libunicorn for the engine's hot path (see hotpath.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__unicorn_calls(void)
{
    return PyModule_Create(&module);
}
