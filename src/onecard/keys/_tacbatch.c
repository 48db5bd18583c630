/*
 * onecard.keys._tacbatch — batch TAC verification in C (spec: shared/specs/epurse.md §2, §12).
 *
 * One call verifies a whole batch of TACs under one issuer-level DTK (the master already
 * diversified by every factor but the card's, cached by the caller):
 *
 *   card DTK = div(issuer key, card factor)     §2.5 (3DES: E(F)‖E(~F); SM4: E(F‖~F))
 *   TAC key  = L8(DTK) XOR R8(DTK) for 3DES, the DTK itself for SM4     §2.7
 *   MAC      = left 4 bytes of the last CBC block over pad80(data), IV 0   §2.2 / §2.4
 *
 * Exactly `onecard.keys.algorithms.mac(alg, tac_key(alg, dtk), data)`. Single DES is 3DES with
 * K‖K‖K, so only DES-EDE3-ECB and SM4-ECB from OpenSSL's default provider are needed. The
 * cipher objects are fetched once; every thread keeps its own two contexts per algorithm (one
 * keyed with the issuer key, one re-keyed per card), so a card costs one key schedule and no
 * allocation. Consecutive records of the same card reuse its TAC key: the caller sorts a
 * batch by card.
 *
 * The inputs are copied into C buffers with the GIL held; the loop then runs without the GIL,
 * so several threads verify on several cores.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>

enum { ALG_TDES = 0, ALG_SM4 = 1, ALG_COUNT = 2 };
enum { FACTOR_LEN = 8, TAC_LEN = 4, KEY_LEN = 16, MAX_BLOCK = 16 };
enum { OK = 0, ERR_OPENSSL = -1, ERR_NOMEM = -2 };

static const char *const CIPHER_NAMES[ALG_COUNT] = {"DES-EDE3-ECB", "SM4-ECB"};
static const int BLOCK[ALG_COUNT] = {8, 16};

static EVP_CIPHER *ciphers[ALG_COUNT];
static pthread_key_t tls_key;

/* Per-thread contexts: `issuer` holds the batch's issuer key, `card` the current TAC key. */
typedef struct {
    EVP_CIPHER_CTX *issuer[ALG_COUNT];
    EVP_CIPHER_CTX *card[ALG_COUNT];
} thread_ctx;

static void thread_ctx_free(void *p) {
    thread_ctx *t = p;
    if (t == NULL) return;
    for (int a = 0; a < ALG_COUNT; a++) {
        EVP_CIPHER_CTX_free(t->issuer[a]);
        EVP_CIPHER_CTX_free(t->card[a]);
    }
    OPENSSL_cleanse(t, sizeof(*t));
    free(t);
}

static EVP_CIPHER_CTX *new_ctx(int alg) {
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (ctx == NULL) return NULL;
    if (EVP_EncryptInit_ex2(ctx, ciphers[alg], NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_set_padding(ctx, 0) != 1) {
        EVP_CIPHER_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

/* This thread's contexts for `alg`, created on first use (no GIL needed). */
static int get_ctx(int alg, EVP_CIPHER_CTX **issuer, EVP_CIPHER_CTX **card) {
    thread_ctx *t = pthread_getspecific(tls_key);
    if (t == NULL) {
        t = calloc(1, sizeof(*t));
        if (t == NULL) return ERR_NOMEM;
        if (pthread_setspecific(tls_key, t) != 0) {
            free(t);
            return ERR_NOMEM;
        }
    }
    if (t->issuer[alg] == NULL) t->issuer[alg] = new_ctx(alg);
    if (t->card[alg] == NULL) t->card[alg] = new_ctx(alg);
    if (t->issuer[alg] == NULL || t->card[alg] == NULL) return ERR_OPENSSL;
    *issuer = t->issuer[alg];
    *card = t->card[alg];
    return OK;
}

/* Re-key `ctx` (cipher kept): 3DES keys are 24 bytes, SM4 keys 16. */
static int set_key(EVP_CIPHER_CTX *ctx, const unsigned char *key) {
    return EVP_EncryptInit_ex2(ctx, NULL, key, NULL, NULL) == 1 ? OK : ERR_OPENSSL;
}

static int ecb_encrypt(EVP_CIPHER_CTX *ctx, unsigned char *out, const unsigned char *in,
                       int len) {
    int outl = 0;
    if (EVP_EncryptUpdate(ctx, out, &outl, in, len) != 1 || outl != len) return ERR_OPENSSL;
    return OK;
}

/* Key the card context with the TAC key of a 16-byte card DTK (§2.7). */
static int set_tac_key(int alg, EVP_CIPHER_CTX *card, const unsigned char dtk[KEY_LEN]) {
    if (alg == ALG_SM4) return set_key(card, dtk);
    unsigned char k24[24];
    for (int j = 0; j < 8; j++) k24[j] = k24[8 + j] = k24[16 + j] = dtk[j] ^ dtk[8 + j];
    int rc = set_key(card, k24);
    OPENSSL_cleanse(k24, sizeof(k24));
    return rc;
}

/* Left 4 bytes of the last CBC block over pad80(data, block), IV 0 (§2.1, §2.2, §2.4). */
static int cbc_mac(EVP_CIPHER_CTX *card, int block, const unsigned char *data, size_t len,
                   unsigned char mac[MAX_BLOCK]) {
    unsigned char chain[MAX_BLOCK] = {0}, in[MAX_BLOCK];
    size_t full = len / (size_t)block;
    for (size_t b = 0; b < full; b++) {
        const unsigned char *p = data + b * (size_t)block;
        for (int j = 0; j < block; j++) in[j] = chain[j] ^ p[j];
        if (ecb_encrypt(card, chain, in, block) != OK) return ERR_OPENSSL;
    }
    /* Final block: the tail (possibly empty), 80, zeros. Always present (§2.1). */
    size_t tail = len - full * (size_t)block;
    unsigned char last[MAX_BLOCK] = {0};
    memcpy(last, data + full * (size_t)block, tail);
    last[tail] = 0x80;
    for (int j = 0; j < block; j++) in[j] = chain[j] ^ last[j];
    if (ecb_encrypt(card, chain, in, block) != OK) return ERR_OPENSSL;
    memcpy(mac, chain, TAC_LEN);
    return OK;
}

/*
 * The batch loop (runs without the GIL). `factors` is NULL when `key` already is the card DTK
 * (zero-level keys); otherwise n × 8 bytes. Record i's data is data[offs[i] .. offs[i+1]).
 */
static int verify_batch(int alg, const unsigned char key[KEY_LEN], Py_ssize_t n,
                        const unsigned char *factors, const unsigned char *data,
                        const size_t *offs, const unsigned char *tacs, unsigned char *out) {
    EVP_CIPHER_CTX *issuer, *card;
    int rc = get_ctx(alg, &issuer, &card);
    if (rc != OK) return rc;
    const int block = BLOCK[alg];
    unsigned char dtk[KEY_LEN], div_in[KEY_LEN], mac[MAX_BLOCK];

    if (factors == NULL) {
        rc = set_tac_key(alg, card, key);
    } else if (alg == ALG_TDES) {
        unsigned char k24[24];
        memcpy(k24, key, KEY_LEN);
        memcpy(k24 + KEY_LEN, key, 8); /* K1‖K2‖K1 */
        rc = set_key(issuer, k24);
        OPENSSL_cleanse(k24, sizeof(k24));
    } else {
        rc = set_key(issuer, key);
    }

    const unsigned char *prev = NULL;
    for (Py_ssize_t i = 0; i < n && rc == OK; i++) {
        if (factors != NULL) {
            const unsigned char *f = factors + (size_t)i * FACTOR_LEN;
            if (prev == NULL || memcmp(prev, f, FACTOR_LEN) != 0) {
                /* §2.5: 3DES E(F)‖E(~F) and SM4 E(F‖~F) both encrypt the 16 bytes F‖~F. */
                for (int j = 0; j < FACTOR_LEN; j++) {
                    div_in[j] = f[j];
                    div_in[FACTOR_LEN + j] = (unsigned char)~f[j];
                }
                if ((rc = ecb_encrypt(issuer, dtk, div_in, KEY_LEN)) != OK) break;
                if ((rc = set_tac_key(alg, card, dtk)) != OK) break;
                prev = f;
            }
        }
        rc = cbc_mac(card, block, data + offs[i], offs[i + 1] - offs[i], mac);
        out[i] = (unsigned char)(rc == OK && CRYPTO_memcmp(mac, tacs + (size_t)i * TAC_LEN,
                                                           TAC_LEN) == 0);
    }
    OPENSSL_cleanse(dtk, sizeof(dtk));
    OPENSSL_cleanse(mac, sizeof(mac));
    return rc;
}

/* ----------------------------------------------------------------------------- Python glue */

static int parse_algorithm(PyObject *obj) {
    if (!PyUnicode_Check(obj)) {
        PyErr_SetString(PyExc_TypeError, "algorithm must be a str ('3des' or 'sm4')");
        return -1;
    }
    if (PyUnicode_CompareWithASCIIString(obj, "3des") == 0) return ALG_TDES;
    if (PyUnicode_CompareWithASCIIString(obj, "sm4") == 0) return ALG_SM4;
    PyErr_Format(PyExc_ValueError, "unknown algorithm %R (expected '3des' or 'sm4')", obj);
    return -1;
}

static PyObject *raise_rc(int rc) {
    if (rc == ERR_NOMEM) return PyErr_NoMemory();
    unsigned long e = ERR_get_error();
    char buf[256] = "unknown error";
    if (e != 0) ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    PyErr_Format(PyExc_RuntimeError, "OpenSSL cipher failure: %s", buf);
    return NULL;
}

/* Copy `seq[i]` (bytes-like, exactly `want` bytes) to dst. */
static int copy_fixed(PyObject *item, const char *what, Py_ssize_t i, Py_ssize_t want,
                      unsigned char *dst) {
    Py_buffer view;
    if (PyObject_GetBuffer(item, &view, PyBUF_SIMPLE) != 0) return -1;
    int ok = view.len == want;
    if (ok) memcpy(dst, view.buf, (size_t)want);
    else
        PyErr_Format(PyExc_ValueError, "%s %zd must be %zd bytes, got %zd", what, i, want,
                     view.len);
    PyBuffer_Release(&view);
    return ok ? 0 : -1;
}

PyDoc_STRVAR(verify_doc,
"verify(algorithm, key, factors, data, tacs, /) -> bytes\n\n"
"Verify a batch of TACs under one issuer-level DTK. ``algorithm`` is '3des' or 'sm4';\n"
"``key`` the 16-byte issuer-level DTK (or, with ``factors`` None, the card DTK itself);\n"
"``factors`` a sequence of 8-byte card factors; ``data`` the TAC inputs; ``tacs`` the\n"
"4-byte TACs. Returns one byte per record: 1 when the TAC verifies, 0 otherwise. Records of\n"
"one card should be adjacent (the card's TAC key is then derived once). Bad lengths raise\n"
"ValueError.");

static PyObject *tacbatch_verify(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *alg_obj, *factors_obj, *data_obj, *tacs_obj;
    Py_buffer key;
    if (!PyArg_ParseTuple(args, "Oy*OOO:verify", &alg_obj, &key, &factors_obj, &data_obj,
                          &tacs_obj))
        return NULL;

    PyObject *result = NULL, *fseq = NULL, *dseq = NULL, *tseq = NULL;
    unsigned char *factors = NULL, *data = NULL, *tacs = NULL, *verdicts = NULL;
    unsigned char key_copy[KEY_LEN];
    size_t *offs = NULL;

    int alg = parse_algorithm(alg_obj);
    if (alg < 0) goto done;
    if (key.len != KEY_LEN) {
        PyErr_Format(PyExc_ValueError, "key must be %d bytes, got %zd", KEY_LEN, key.len);
        goto done;
    }
    memcpy(key_copy, key.buf, KEY_LEN);

    dseq = PySequence_Fast(data_obj, "data must be a sequence of bytes");
    tseq = PySequence_Fast(tacs_obj, "tacs must be a sequence of bytes");
    if (dseq == NULL || tseq == NULL) goto done;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(dseq);
    if (PySequence_Fast_GET_SIZE(tseq) != n) {
        PyErr_Format(PyExc_ValueError, "%zd data but %zd tacs", n, PySequence_Fast_GET_SIZE(tseq));
        goto done;
    }
    if (factors_obj != Py_None) {
        fseq = PySequence_Fast(factors_obj, "factors must be a sequence of bytes or None");
        if (fseq == NULL) goto done;
        if (PySequence_Fast_GET_SIZE(fseq) != n) {
            PyErr_Format(PyExc_ValueError, "%zd data but %zd factors", n,
                         PySequence_Fast_GET_SIZE(fseq));
            goto done;
        }
    }
    if (n == 0) {
        result = PyBytes_FromStringAndSize(NULL, 0);
        goto done;
    }

    /* Copy everything the loop reads into C buffers while the GIL is held. */
    offs = PyMem_Malloc(((size_t)n + 1) * sizeof(size_t));
    tacs = PyMem_Malloc((size_t)n * TAC_LEN);
    verdicts = PyMem_Malloc((size_t)n);
    if (fseq != NULL) factors = PyMem_Malloc((size_t)n * FACTOR_LEN);
    if (offs == NULL || tacs == NULL || verdicts == NULL || (fseq != NULL && factors == NULL)) {
        PyErr_NoMemory();
        goto done;
    }
    PyObject **ditems = PySequence_Fast_ITEMS(dseq);
    size_t total = 0;
    offs[0] = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_buffer view;
        if (PyObject_GetBuffer(ditems[i], &view, PyBUF_SIMPLE) != 0) goto done;
        total += (size_t)view.len;
        offs[i + 1] = total;
        PyBuffer_Release(&view);
    }
    data = PyMem_Malloc(total ? total : 1);
    if (data == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        /* Lengths were fixed in the first pass; a resized bytearray is an error, not UB. */
        if (copy_fixed(ditems[i], "data", i, (Py_ssize_t)(offs[i + 1] - offs[i]),
                       data + offs[i]) != 0)
            goto done;
    }
    PyObject **titems = PySequence_Fast_ITEMS(tseq);
    for (Py_ssize_t i = 0; i < n; i++)
        if (copy_fixed(titems[i], "tac", i, TAC_LEN, tacs + (size_t)i * TAC_LEN) != 0) goto done;
    if (fseq != NULL) {
        PyObject **fitems = PySequence_Fast_ITEMS(fseq);
        for (Py_ssize_t i = 0; i < n; i++)
            if (copy_fixed(fitems[i], "factor", i, FACTOR_LEN,
                           factors + (size_t)i * FACTOR_LEN) != 0)
                goto done;
    }

    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = verify_batch(alg, key_copy, n, factors, data, offs, tacs, verdicts);
    Py_END_ALLOW_THREADS
    if (rc != OK) {
        raise_rc(rc);
        goto done;
    }
    result = PyBytes_FromStringAndSize((const char *)verdicts, n);

done:
    OPENSSL_cleanse(key_copy, sizeof(key_copy));
    PyBuffer_Release(&key);
    Py_XDECREF(fseq);
    Py_XDECREF(dseq);
    Py_XDECREF(tseq);
    PyMem_Free(offs);
    PyMem_Free(factors);
    PyMem_Free(data);
    PyMem_Free(tacs);
    PyMem_Free(verdicts);
    return result;
}

PyDoc_STRVAR(time_blocks_doc,
"time_blocks(algorithm, count, /) -> float\n\n"
"Seconds for ``count`` single-block ECB encryptions through one reused context, one\n"
"EVP_EncryptUpdate call per block (benchmark helper: OpenSSL's raw block rate from C).");

static PyObject *tacbatch_time_blocks(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *alg_obj;
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "On:time_blocks", &alg_obj, &count)) return NULL;
    int alg = parse_algorithm(alg_obj);
    if (alg < 0) return NULL;
    if (count < 0) {
        PyErr_SetString(PyExc_ValueError, "count must be >= 0");
        return NULL;
    }
    int rc;
    double seconds = 0.0;
    Py_BEGIN_ALLOW_THREADS
    EVP_CIPHER_CTX *issuer, *card;
    rc = get_ctx(alg, &issuer, &card);
    if (rc == OK) {
        unsigned char key[24], blk[MAX_BLOCK];
        for (int j = 0; j < 24; j++) key[j] = (unsigned char)(0x11 * j + 3);
        for (int j = 0; j < MAX_BLOCK; j++) blk[j] = (unsigned char)j;
        rc = set_key(issuer, key);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (Py_ssize_t i = 0; i < count && rc == OK; i++)
            rc = ecb_encrypt(issuer, blk, blk, BLOCK[alg]);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    }
    Py_END_ALLOW_THREADS
    if (rc != OK) return raise_rc(rc);
    return PyFloat_FromDouble(seconds);
}

static PyMethodDef methods[] = {
    {"verify", tacbatch_verify, METH_VARARGS, verify_doc},
    {"time_blocks", tacbatch_time_blocks, METH_VARARGS, time_blocks_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "onecard.keys._tacbatch",
    "Batch TAC verification in C over OpenSSL 3 (DES-EDE3-ECB, SM4-ECB).",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC PyInit__tacbatch(void) {
    static int initialised = 0;
    if (!initialised) {
        for (int a = 0; a < ALG_COUNT; a++) {
            ciphers[a] = EVP_CIPHER_fetch(NULL, CIPHER_NAMES[a], NULL);
            if (ciphers[a] == NULL) {
                unsigned long e = ERR_get_error();
                char buf[256] = "not available";
                if (e != 0) ERR_error_string_n(e, buf, sizeof(buf));
                ERR_clear_error();
                for (int b = 0; b < a; b++) {
                    EVP_CIPHER_free(ciphers[b]);
                    ciphers[b] = NULL;
                }
                return PyErr_Format(PyExc_ImportError,
                                    "OpenSSL default provider has no %s: %s", CIPHER_NAMES[a],
                                    buf);
            }
        }
        if (pthread_key_create(&tls_key, thread_ctx_free) != 0) {
            for (int a = 0; a < ALG_COUNT; a++) {
                EVP_CIPHER_free(ciphers[a]);
                ciphers[a] = NULL;
            }
            return PyErr_Format(PyExc_ImportError, "pthread_key_create failed");
        }
        initialised = 1;
    }
    return PyModule_Create(&module);
}
