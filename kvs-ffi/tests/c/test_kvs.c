/*
 * test_kvs.c: the C test suite of libkvs, compiled against the installed kvs.h and linked
 * once with libkvs.so and once with libkvs.a by tests/run.sh (which also runs it under
 * valgrind).
 *
 *   usage: test_kvs SCRATCH_DIR EXPECTED_VERSION
 *
 * Each test gets its own directory under SCRATCH_DIR. Prints one line per test and a closing
 * "N passed, M failed" line; exits non-zero if any test failed.
 */
#define _POSIX_C_SOURCE 200809L /* clock_gettime, nanosleep, kill */

#include <kvs.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <sched.h>
#include <dirent.h>

_Static_assert(KVS_OK == 0, "status numbers are fixed");
_Static_assert(KVS_NOT_FOUND == 1, "status numbers are fixed");
_Static_assert(KVS_INVALID_ARGUMENT == 2, "status numbers are fixed");
_Static_assert(KVS_IO_ERROR == 3, "status numbers are fixed");
_Static_assert(KVS_CORRUPTION == 4, "status numbers are fixed");
_Static_assert(KVS_ERROR == 5, "status numbers are fixed");
_Static_assert(KVS_FORKED == 6, "status numbers are fixed");

static const char *scratch;
static const char *expected_version;
static int current_failed;

/* Records a failed check of the running test; the test carries on (or returns, see CHECK). */
static void check_failed(const char *file, int line, const char *fmt, ...)
{
    va_list args;
    fprintf(stderr, "    %s:%d: ", file, line);
    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);
    const char *message = kvs_last_error();
    fprintf(stderr, " (kvs_last_error: %s)\n", message ? message : "NULL");
    current_failed = 1;
}

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            check_failed(__FILE__, __LINE__, "check failed: %s", #cond);                   \
            return;                                                                        \
        }                                                                                  \
    } while (0)

#define CHECK_STATUS(expr, want)                                                           \
    do {                                                                                   \
        kvs_status got_ = (expr);                                                          \
        if (got_ != (want)) {                                                              \
            check_failed(__FILE__, __LINE__, "%s returned %d, expected %s (%d)", #expr,    \
                         (int)got_, #want, (int)(want));                                   \
            return;                                                                        \
        }                                                                                  \
    } while (0)

/* The bytes of a string literal, without its NUL. */
#define S(lit) (const uint8_t *)(lit), (sizeof(lit) - 1)

/* A fresh directory path for one test (not created: kvs_open creates it). */
static void test_dir(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", scratch, name);
}

/* Whether kvs_get(key) is KVS_OK with exactly the `len` bytes at `want`. */
static int has_value(kvs_db *db, const uint8_t *key, size_t key_len, const void *want, size_t len)
{
    uint8_t *value = NULL;
    size_t value_len = 12345;
    kvs_status status = kvs_get(db, key, key_len, &value, &value_len);
    int ok = status == KVS_OK && value_len == len && (len == 0 || memcmp(value, want, len) == 0);
    if (len == 0)
        ok = ok && value == NULL;
    kvs_value_free(value, value_len);
    return ok;
}

/* Whether kvs_get(key) is KVS_NOT_FOUND with NULL / 0 outputs. */
static int is_missing(kvs_db *db, const uint8_t *key, size_t key_len)
{
    uint8_t *value = (uint8_t *)&value; /* garbage the call must overwrite */
    size_t value_len = 12345;
    kvs_status status = kvs_get(db, key, key_len, &value, &value_len);
    return status == KVS_NOT_FOUND && value == NULL && value_len == 0;
}

static kvs_db *open_or_null(const char *name)
{
    char dir[4096];
    test_dir(dir, sizeof dir, name);
    kvs_db *db = NULL;
    if (kvs_open(dir, &db) != KVS_OK)
        return NULL;
    return db;
}

/* ---- the tests ---------------------------------------------------------------------- */

static void version_is_the_workspace_version(void)
{
    const char *version = kvs_version();
    CHECK(version != NULL);
    CHECK(strcmp(version, expected_version) == 0);
    CHECK(kvs_version() == version); /* static: the same string every time */
}

static void set_then_get_returns_the_value(void)
{
    kvs_db *db = open_or_null("set_get");
    CHECK(db != NULL);
    CHECK_STATUS(kvs_set(db, S("key1"), S("value1")), KVS_OK);
    int ok = has_value(db, S("key1"), "value1", 6);
    kvs_close(db);
    CHECK(ok);
}

static void set_overwrites_the_previous_value(void)
{
    kvs_db *db = open_or_null("overwrite");
    CHECK(db != NULL);
    CHECK_STATUS(kvs_set(db, S("k"), S("first")), KVS_OK);
    CHECK_STATUS(kvs_set(db, S("k"), S("second, longer")), KVS_OK);
    int ok = has_value(db, S("k"), "second, longer", 14);
    kvs_close(db);
    CHECK(ok);
}

static void missing_key_is_not_found_with_null_value(void)
{
    kvs_db *db = open_or_null("missing");
    CHECK(db != NULL);
    int ok = is_missing(db, S("nope"));
    const char *message = kvs_last_error();
    int message_ok = message != NULL && strstr(message, "not found") != NULL;
    kvs_close(db);
    CHECK(ok);
    CHECK(message_ok);
}

static void remove_deletes_the_key(void)
{
    kvs_db *db = open_or_null("remove");
    CHECK(db != NULL);
    kvs_status set = kvs_set(db, S("k"), S("v"));
    kvs_status removed = kvs_remove(db, S("k"));
    int gone = is_missing(db, S("k"));
    kvs_close(db);
    CHECK(set == KVS_OK);
    CHECK(removed == KVS_OK);
    CHECK(gone);
}

static void removing_a_missing_key_is_not_found(void)
{
    kvs_db *db = open_or_null("remove_missing");
    CHECK(db != NULL);
    kvs_status never = kvs_remove(db, S("never set"));
    kvs_set(db, S("k"), S("v"));
    kvs_remove(db, S("k"));
    kvs_status twice = kvs_remove(db, S("k"));
    const char *message = kvs_last_error();
    int message_ok = message != NULL && strcmp(message, "Key not found") == 0;
    kvs_close(db);
    CHECK(never == KVS_NOT_FOUND);
    CHECK(twice == KVS_NOT_FOUND);
    CHECK(message_ok);
}

static void binary_keys_and_values_keep_nul_bytes(void)
{
    kvs_db *db = open_or_null("binary");
    CHECK(db != NULL);
    const uint8_t key_a[] = {0, 'a', 0};
    const uint8_t key_b[] = {0, 'a', 0, 0}; /* differs from key_a only after a NUL */
    const uint8_t value_a[] = {0, 0xff, 0, 0x80, 0};
    const uint8_t value_b[] = {0};
    uint8_t all_bytes[256];
    for (int i = 0; i < 256; i++)
        all_bytes[i] = (uint8_t)i;
    kvs_status s1 = kvs_set(db, key_a, sizeof key_a, value_a, sizeof value_a);
    kvs_status s2 = kvs_set(db, key_b, sizeof key_b, value_b, sizeof value_b);
    kvs_status s3 = kvs_set(db, all_bytes, sizeof all_bytes, all_bytes, sizeof all_bytes);
    int ok_a = has_value(db, key_a, sizeof key_a, value_a, sizeof value_a);
    int ok_b = has_value(db, key_b, sizeof key_b, value_b, sizeof value_b);
    int ok_all = has_value(db, all_bytes, sizeof all_bytes, all_bytes, sizeof all_bytes);
    int prefix_missing = is_missing(db, key_a, 1); /* just the leading NUL */
    kvs_close(db);
    CHECK(s1 == KVS_OK && s2 == KVS_OK && s3 == KVS_OK);
    CHECK(ok_a);
    CHECK(ok_b);
    CHECK(ok_all);
    CHECK(prefix_missing);
}

static void empty_keys_and_values_work_with_null_or_real_pointers(void)
{
    kvs_db *db = open_or_null("empty");
    CHECK(db != NULL);
    const uint8_t some_bytes[] = "ignored";
    /* An empty key, spelled NULL/0, then read back spelled pointer/0. */
    kvs_status s1 = kvs_set(db, NULL, 0, S("value of the empty key"));
    int ok1 = has_value(db, some_bytes, 0, "value of the empty key", 22);
    /* An empty value, spelled pointer/0 and NULL/0. */
    kvs_status s2 = kvs_set(db, S("empty value"), some_bytes, 0);
    int ok2 = has_value(db, S("empty value"), "", 0);
    kvs_status s3 = kvs_set(db, S("null value"), NULL, 0);
    uint8_t *value = (uint8_t *)&value;
    size_t value_len = 99;
    kvs_status s4 = kvs_get(db, S("null value"), &value, &value_len);
    kvs_status removed = kvs_remove(db, NULL, 0);
    int key_gone = is_missing(db, NULL, 0);
    kvs_close(db);
    CHECK(s1 == KVS_OK && s2 == KVS_OK && s3 == KVS_OK);
    CHECK(ok1);
    CHECK(ok2);
    /* An empty value is KVS_OK (not NOT_FOUND), with NULL and length 0. */
    CHECK(s4 == KVS_OK && value == NULL && value_len == 0);
    CHECK(removed == KVS_OK);
    CHECK(key_gone);
}

static void large_values_round_trip(void)
{
    kvs_db *db = open_or_null("large");
    CHECK(db != NULL);
    size_t len = (size_t)8 << 20; /* 8 MiB */
    uint8_t *big = malloc(len);
    CHECK(big != NULL);
    for (size_t i = 0; i < len; i++)
        big[i] = (uint8_t)(i * 7 + i / 251);
    uint8_t *big_key = malloc(64 * 1024);
    CHECK(big_key != NULL);
    memset(big_key, 'k', 64 * 1024);
    kvs_status s1 = kvs_set(db, S("big"), big, len);
    kvs_status s2 = kvs_set(db, big_key, 64 * 1024, S("under a big key"));
    int ok1 = has_value(db, S("big"), big, len);
    int ok2 = has_value(db, big_key, 64 * 1024, "under a big key", 15);
    kvs_close(db);
    db = open_or_null("large");
    int ok3 = db != NULL && has_value(db, S("big"), big, len);
    kvs_close(db);
    free(big);
    free(big_key);
    CHECK(s1 == KVS_OK && s2 == KVS_OK);
    CHECK(ok1 && ok2);
    CHECK(ok3);
}

static void oversized_key_is_invalid_argument(void)
{
    kvs_db *db = open_or_null("oversized");
    CHECK(db != NULL);
    size_t len = ((size_t)1 << 20) + 1; /* one byte over the 1 MiB key limit */
    uint8_t *key = calloc(len, 1);
    kvs_status status = key ? kvs_set(db, key, len, S("v")) : KVS_ERROR;
    free(key);
    kvs_close(db);
    CHECK(status == KVS_INVALID_ARGUMENT);
}

static void null_arguments_are_invalid_argument(void)
{
    char dir[4096];
    test_dir(dir, sizeof dir, "nulls");
    kvs_db *db = (kvs_db *)&db; /* garbage the failing open must overwrite */
    uint8_t *value = (uint8_t *)&value;
    size_t value_len = 7;

    CHECK_STATUS(kvs_open(NULL, &db), KVS_INVALID_ARGUMENT);
    CHECK(db == NULL);
    CHECK(kvs_last_error() != NULL && strstr(kvs_last_error(), "path") != NULL);
    CHECK_STATUS(kvs_open(dir, NULL), KVS_INVALID_ARGUMENT);
    CHECK_STATUS(kvs_open("", &db), KVS_INVALID_ARGUMENT);
    CHECK_STATUS(kvs_open_engine(NULL, "kvs", &db), KVS_INVALID_ARGUMENT);
    CHECK_STATUS(kvs_open_engine(dir, NULL, &db), KVS_INVALID_ARGUMENT);
    CHECK(db == NULL);
    CHECK_STATUS(kvs_open_engine(dir, "kvs", NULL), KVS_INVALID_ARGUMENT);

    CHECK_STATUS(kvs_set(NULL, S("k"), S("v")), KVS_INVALID_ARGUMENT);
    CHECK_STATUS(kvs_get(NULL, S("k"), &value, &value_len), KVS_INVALID_ARGUMENT);
    CHECK(value == NULL && value_len == 0);
    CHECK_STATUS(kvs_remove(NULL, S("k")), KVS_INVALID_ARGUMENT);

    CHECK_STATUS(kvs_open(dir, &db), KVS_OK);
    kvs_status statuses[] = {
        kvs_set(db, NULL, 3, S("v")),
        kvs_set(db, S("k"), NULL, 3),
        kvs_get(db, NULL, 3, &value, &value_len),
        kvs_get(db, S("k"), NULL, &value_len),
        kvs_get(db, S("k"), &value, NULL),
        kvs_remove(db, NULL, 3),
    };
    const char *message = kvs_last_error();
    int message_ok = message != NULL && strstr(message, "NULL") != NULL;
    int untouched = is_missing(db, S("k")); /* none of the failed calls wrote anything */
    kvs_close(db);
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++) {
        if (statuses[i] != KVS_INVALID_ARGUMENT)
            check_failed(__FILE__, __LINE__, "call %zu returned %d", i, (int)statuses[i]);
    }
    CHECK(message_ok);
    CHECK(untouched);

    kvs_close(NULL);         /* no-op */
    kvs_value_free(NULL, 0); /* no-op */
}

static void data_survives_close_and_reopen(void)
{
    kvs_db *db = open_or_null("reopen");
    CHECK(db != NULL);
    char key[32], value[32];
    for (int i = 0; i < 100; i++) {
        int kl = snprintf(key, sizeof key, "key%d", i);
        int vl = snprintf(value, sizeof value, "value%d", i);
        CHECK_STATUS(kvs_set(db, (const uint8_t *)key, (size_t)kl, (const uint8_t *)value,
                             (size_t)vl),
                     KVS_OK);
    }
    CHECK_STATUS(kvs_remove(db, S("key7")), KVS_OK);
    kvs_close(db);

    /* Reopen right away, twice: the directory is released by kvs_close. */
    for (int round = 0; round < 2; round++) {
        db = open_or_null("reopen");
        CHECK(db != NULL);
        int ok = 1;
        for (int i = 0; i < 100; i++) {
            int kl = snprintf(key, sizeof key, "key%d", i);
            int vl = snprintf(value, sizeof value, "value%d", i);
            if (i == 7)
                ok = ok && is_missing(db, (const uint8_t *)key, (size_t)kl);
            else
                ok = ok && has_value(db, (const uint8_t *)key, (size_t)kl, value, (size_t)vl);
        }
        kvs_close(db);
        CHECK(ok);
    }
}

static void value_outlives_its_handle(void)
{
    kvs_db *db = open_or_null("outlive");
    CHECK(db != NULL);
    uint8_t *value = NULL;
    size_t value_len = 0;
    kvs_set(db, S("k"), S("still here"));
    kvs_status status = kvs_get(db, S("k"), &value, &value_len);
    kvs_close(db);
    CHECK(status == KVS_OK);
    int ok = value_len == 10 && memcmp(value, "still here", 10) == 0;
    kvs_value_free(value, value_len);
    CHECK(ok);
}

/* Reads the engine file a store records, or "" if there is none. */
static void recorded_engine(const char *dir, char *buf, size_t size)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/engine", dir);
    buf[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    size_t n = fread(buf, 1, size - 1, f);
    buf[n] = 0;
    fclose(f);
    buf[strcspn(buf, "\n")] = 0;
}

static void open_of_a_new_directory_uses_the_kvs_engine(void)
{
    char dir[4096], engine[64];
    test_dir(dir, sizeof dir, "new_default/nested/dir");
    kvs_db *db = NULL;
    CHECK_STATUS(kvs_open(dir, &db), KVS_OK);
    kvs_close(db);
    recorded_engine(dir, engine, sizeof engine);
    CHECK(strcmp(engine, "kvs") == 0);
}

/* The whole API against one engine, by name; then kvs_open finds the recorded engine. */
static void engine_round_trip(const char *name, const char *engine)
{
    char dir[4096], recorded[64];
    test_dir(dir, sizeof dir, name);
    kvs_db *db = NULL;
    CHECK_STATUS(kvs_open_engine(dir, engine, &db), KVS_OK);
    CHECK_STATUS(kvs_set(db, S("k\0ey"), S("v\0alue")), KVS_OK);
    CHECK_STATUS(kvs_set(db, S("gone"), S("soon")), KVS_OK);
    CHECK_STATUS(kvs_remove(db, S("gone")), KVS_OK);
    CHECK_STATUS(kvs_remove(db, S("gone")), KVS_NOT_FOUND);
    kvs_close(db);
    recorded_engine(dir, recorded, sizeof recorded);
    CHECK(strcmp(recorded, engine) == 0);

    db = NULL;
    CHECK_STATUS(kvs_open(dir, &db), KVS_OK); /* the recorded engine */
    int ok = has_value(db, S("k\0ey"), "v\0alue", 6) && is_missing(db, S("gone"));
    kvs_close(db);
    CHECK(ok);

    db = NULL;
    CHECK_STATUS(kvs_open_engine(dir, engine, &db), KVS_OK); /* same name again: fine */
    ok = has_value(db, S("k\0ey"), "v\0alue", 6);
    kvs_close(db);
    CHECK(ok);
}

static void kvs_engine_round_trip(void)
{
    engine_round_trip("engine_kvs", "kvs");
}

static void sled_engine_round_trip(void)
{
    engine_round_trip("engine_sled", "sled");
}

static void other_engine_than_recorded_is_refused(void)
{
    char dir[4096], recorded[64];
    test_dir(dir, sizeof dir, "mismatch");
    kvs_db *db = NULL;
    CHECK_STATUS(kvs_open_engine(dir, "sled", &db), KVS_OK);
    CHECK_STATUS(kvs_set(db, S("k"), S("v")), KVS_OK);
    kvs_close(db);
    db = (kvs_db *)&db;
    CHECK_STATUS(kvs_open_engine(dir, "kvs", &db), KVS_INVALID_ARGUMENT);
    CHECK(db == NULL);
    const char *message = kvs_last_error();
    CHECK(message != NULL && strstr(message, "sled") != NULL);
    recorded_engine(dir, recorded, sizeof recorded);
    CHECK(strcmp(recorded, "sled") == 0);
}

static void unknown_engine_name_is_invalid_argument(void)
{
    char dir[4096];
    test_dir(dir, sizeof dir, "bad_engine");
    kvs_db *db = (kvs_db *)&db;
    CHECK_STATUS(kvs_open_engine(dir, "rocksdb", &db), KVS_INVALID_ARGUMENT);
    CHECK(db == NULL);
    const char *message = kvs_last_error();
    CHECK(message != NULL && strstr(message, "rocksdb") != NULL);
    CHECK_STATUS(kvs_open_engine(dir, "", &db), KVS_INVALID_ARGUMENT);
    CHECK_STATUS(kvs_open_engine(dir, "KVS", &db), KVS_INVALID_ARGUMENT);
    CHECK_STATUS(kvs_open_engine(dir, "\xff\xfe", &db), KVS_INVALID_ARGUMENT);
}

static void path_that_is_a_regular_file_is_io_error(void)
{
    char path[4096];
    test_dir(path, sizeof path, "regular_file");
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fputs("not a store\n", f);
    fclose(f);
    kvs_db *db = (kvs_db *)&db;
    CHECK_STATUS(kvs_open(path, &db), KVS_IO_ERROR);
    CHECK(db == NULL);
    CHECK_STATUS(kvs_open_engine(path, "sled", &db), KVS_IO_ERROR);
    const char *message = kvs_last_error();
    CHECK(message != NULL && strstr(message, "regular_file") != NULL);
}

static void damaged_engine_record_is_corruption(void)
{
    char dir[4096], path[4096 + 16];
    test_dir(dir, sizeof dir, "damaged");
    CHECK(mkdir(dir, 0777) == 0);
    snprintf(path, sizeof path, "%s/engine", dir);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    fputs("\x01garbage\n", f);
    fclose(f);
    kvs_db *db = (kvs_db *)&db;
    CHECK_STATUS(kvs_open(dir, &db), KVS_CORRUPTION);
    CHECK(db == NULL);
    const char *message = kvs_last_error();
    CHECK(message != NULL && strstr(message, "engine") != NULL);
}

static void second_open_of_an_open_store_is_io_error(void)
{
    kvs_db *first = open_or_null("locked");
    CHECK(first != NULL);
    char dir[4096];
    test_dir(dir, sizeof dir, "locked");
    kvs_db *second = (kvs_db *)&second;
    kvs_status status = kvs_open(dir, &second);
    const char *message = kvs_last_error();
    int message_ok = message != NULL && strstr(message, "locked") != NULL;
    kvs_close(first);
    CHECK(status == KVS_IO_ERROR);
    CHECK(second == NULL);
    CHECK(message_ok);
    /* Once the first handle is closed, the directory opens again. */
    second = open_or_null("locked");
    CHECK(second != NULL);
    kvs_close(second);
}

static void lost_engine_file_is_judged_by_the_data(void)
{
    char dir[4096], path[4096 + 16], recorded[64];
    test_dir(dir, sizeof dir, "lost_engine");
    kvs_db *db = NULL;
    CHECK_STATUS(kvs_open_engine(dir, "kvs", &db), KVS_OK);
    CHECK_STATUS(kvs_set(db, S("k"), S("v")), KVS_OK);
    kvs_close(db);
    snprintf(path, sizeof path, "%s/engine", dir);
    CHECK(unlink(path) == 0);
    /* The kvs log files say whose data it is: sled is refused, and nothing is written. */
    db = (kvs_db *)&db;
    CHECK_STATUS(kvs_open_engine(dir, "sled", &db), KVS_INVALID_ARGUMENT);
    CHECK(db == NULL);
    const char *message = kvs_last_error();
    CHECK(message != NULL && strstr(message, "'kvs'") != NULL && strstr(message, "'sled'"));
    struct stat st;
    CHECK(stat(path, &st) != 0);
    /* Opening without naming an engine opens kvs and records it again. */
    CHECK_STATUS(kvs_open(dir, &db), KVS_OK);
    int ok = has_value(db, S("k"), "v", 1);
    kvs_close(db);
    CHECK(ok);
    recorded_engine(dir, recorded, sizeof recorded);
    CHECK(strcmp(recorded, "kvs") == 0);
}

/* ---- fork() -------------------------------------------------------------------------- */

/* Run in the forked child: every call on the inherited handle is KVS_FORKED, with a message
 * naming the parent; kvs_close() of it is safe. Returns the verdict (0: all as expected). */
static int use_inherited_handle(kvs_db *db, const char *parent_pid)
{
    int code = 0;
    if (kvs_set(db, S("child"), S("1")) != KVS_FORKED)
        code |= 1;
    const char *message = kvs_last_error();
    if (message == NULL || strstr(message, "does not survive fork()") == NULL ||
        strstr(message, parent_pid) == NULL)
        code |= 2;
    uint8_t *value = (uint8_t *)&value;
    size_t len = 12345;
    if (kvs_get(db, S("before"), &value, &len) != KVS_FORKED || value != NULL || len != 0)
        code |= 4;
    if (kvs_remove(db, S("before")) != KVS_FORKED)
        code |= 8;
    kvs_close(db);
    return code;
}

static void forked_child_gets_kvs_forked_and_the_parent_keeps_its_data(void)
{
    char dir[4096], parent_pid[64];
    test_dir(dir, sizeof dir, "forked");
    kvs_db *db = NULL;
    CHECK_STATUS(kvs_open(dir, &db), KVS_OK);
    CHECK_STATUS(kvs_set(db, S("before"), S("1")), KVS_OK);
    snprintf(parent_pid, sizeof parent_pid, "process %d;", (int)getpid());
    int report[2];
    CHECK(pipe(report) == 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        close(report[0]);
        unsigned char code = (unsigned char)use_inherited_handle(db, parent_pid);
        ssize_t written = write(report[1], &code, 1);
        (void)written;
        /* Not _exit: under valgrind, the leak check at the child's exit would count the
         * memory of the parent's threads (the store's compactor), which a child inherits
         * without the threads, as lost. The verdict is on the pipe. */
        raise(SIGKILL);
    }
    close(report[1]);
    unsigned char code = 0xff;
    ssize_t got = pid > 0 ? read(report[0], &code, 1) : -1;
    close(report[0]);
    int status = -1;
    int waited = pid > 0 && waitpid(pid, &status, 0) == pid;
    /* The parent's handle goes on: a write after the child is gone, then a reopen. */
    kvs_status after = kvs_set(db, S("after"), S("2"));
    kvs_close(db);
    CHECK(waited);
    if (got != 1 || code != 0)
        check_failed(__FILE__, __LINE__,
                     "child verdict %d (bits: 1 set, 2 message, 4 get, 8 remove; 255 none)",
                     got == 1 ? code : 255);
    CHECK_STATUS(after, KVS_OK);
    CHECK_STATUS(kvs_open(dir, &db), KVS_OK);
    int intact = has_value(db, S("before"), "1", 1) && has_value(db, S("after"), "2", 1) &&
                 is_missing(db, S("child"));
    kvs_close(db);
    CHECK(intact);
}

/* ---- threads ------------------------------------------------------------------------ */

#define THREADS 4
#define OPS_PER_THREAD 150

struct worker {
    kvs_db *db;
    int id;
    int errors;
};

static void *worker_run(void *arg)
{
    struct worker *w = arg;
    char key[32], value[64];
    for (int i = 0; i < OPS_PER_THREAD; i++) {
        int kl = snprintf(key, sizeof key, "t%d-k%d", w->id, i);
        int vl = snprintf(value, sizeof value, "thread %d value %d", w->id, i);
        if (kvs_set(w->db, (const uint8_t *)key, (size_t)kl, (const uint8_t *)value,
                    (size_t)vl) != KVS_OK)
            w->errors++;
        if (!has_value(w->db, (const uint8_t *)key, (size_t)kl, value, (size_t)vl))
            w->errors++;
        /* Everyone also reads and rewrites one shared key: whatever it holds is whole. */
        uint8_t *shared = NULL;
        size_t shared_len = 0;
        kvs_status status = kvs_get(w->db, S("shared"), &shared, &shared_len);
        if (status == KVS_OK && (shared_len != 8 || memcmp(shared, "writer-", 7) != 0))
            w->errors++;
        if (status != KVS_OK && status != KVS_NOT_FOUND)
            w->errors++;
        kvs_value_free(shared, shared_len);
        char mine[9];
        snprintf(mine, sizeof mine, "writer-%d", w->id);
        if (kvs_set(w->db, S("shared"), (const uint8_t *)mine, 8) != KVS_OK)
            w->errors++;
        if (i % 3 == 0 && kvs_remove(w->db, (const uint8_t *)key, (size_t)kl) != KVS_OK)
            w->errors++;
    }
    /* An error on this thread sets this thread's message only. */
    if (kvs_remove(w->db, S("no such key")) != KVS_NOT_FOUND || kvs_last_error() == NULL)
        w->errors++;
    return NULL;
}

static void threads_share_one_handle(void)
{
    kvs_db *db = open_or_null("threads");
    CHECK(db != NULL);
    pthread_t threads[THREADS];
    struct worker workers[THREADS];
    int started = 0;
    for (int t = 0; t < THREADS; t++) {
        workers[t] = (struct worker){.db = db, .id = t, .errors = 0};
        if (pthread_create(&threads[t], NULL, worker_run, &workers[t]) == 0)
            started++;
    }
    int errors = 0;
    for (int t = 0; t < started; t++) {
        pthread_join(threads[t], NULL);
        errors += workers[t].errors;
    }
    /* Every thread's surviving keys are there, the removed ones are not. */
    int ok = 1;
    char key[32], value[64];
    for (int t = 0; t < started && ok; t++) {
        for (int i = 0; i < OPS_PER_THREAD && ok; i++) {
            int kl = snprintf(key, sizeof key, "t%d-k%d", t, i);
            int vl = snprintf(value, sizeof value, "thread %d value %d", t, i);
            if (i % 3 == 0)
                ok = is_missing(db, (const uint8_t *)key, (size_t)kl);
            else
                ok = has_value(db, (const uint8_t *)key, (size_t)kl, value, (size_t)vl);
        }
    }
    kvs_close(db);
    CHECK(started == THREADS);
    CHECK(errors == 0);
    CHECK(ok);
}

static void *fresh_thread_last_error(void *arg)
{
    *(const char **)arg = kvs_last_error();
    return NULL;
}

static void last_error_is_per_thread(void)
{
    /* This thread has failed calls behind it... */
    kvs_db *db = (kvs_db *)&db;
    CHECK_STATUS(kvs_open(NULL, &db), KVS_INVALID_ARGUMENT);
    CHECK(kvs_last_error() != NULL);
    /* ...a new thread has none. */
    const char *seen = "unset";
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, fresh_thread_last_error, &seen) == 0);
    pthread_join(thread, NULL);
    CHECK(seen == NULL);
    /* A successful call does not clear this thread's message. */
    CHECK(kvs_version() != NULL);
    CHECK(kvs_last_error() != NULL && strstr(kvs_last_error(), "path") != NULL);
}

/* kvs_compare_and_set(db, key, expected, new) with string literals; NULL for absence. */
static kvs_status cas(kvs_db *db, const char *key, const char *expected, const char *new_value,
                      int *swapped)
{
    return kvs_compare_and_set(db, (const uint8_t *)key, strlen(key), (const uint8_t *)expected,
                               expected ? strlen(expected) : 0, expected != NULL,
                               (const uint8_t *)new_value, new_value ? strlen(new_value) : 0,
                               new_value != NULL, swapped);
}

static void compare_and_set_swaps_only_on_a_match(void)
{
    kvs_db *db = open_or_null("cas");
    CHECK(db != NULL);
    int swapped = -1;
    int ok = 1;
    /* Absent, expected absent: set. */
    ok = ok && cas(db, "k", NULL, "one", &swapped) == KVS_OK && swapped == 1;
    ok = ok && has_value(db, S("k"), "one", 3);
    /* Present, expected absent or another value: nothing changes. */
    ok = ok && cas(db, "k", NULL, "two", &swapped) == KVS_OK && swapped == 0;
    ok = ok && cas(db, "k", "on", "two", &swapped) == KVS_OK && swapped == 0;
    ok = ok && cas(db, "k", "", NULL, &swapped) == KVS_OK && swapped == 0;
    ok = ok && has_value(db, S("k"), "one", 3);
    /* Present, expected its value: replaced, then removed. */
    ok = ok && cas(db, "k", "one", "two", &swapped) == KVS_OK && swapped == 1;
    ok = ok && has_value(db, S("k"), "two", 3);
    ok = ok && cas(db, "k", "two", NULL, &swapped) == KVS_OK && swapped == 1;
    ok = ok && is_missing(db, S("k"));
    /* Absent, expected a value: nothing; expected absent and removal: succeeds, no key. */
    ok = ok && cas(db, "k", "two", "three", &swapped) == KVS_OK && swapped == 0;
    ok = ok && cas(db, "k", NULL, NULL, &swapped) == KVS_OK && swapped == 1;
    ok = ok && is_missing(db, S("k"));
    /* An empty value is present: NULL with length 0 and expected_present 1 matches it, and
     * absent pointers are not read (garbage ones here). */
    ok = ok && kvs_set(db, S("empty"), NULL, 0) == KVS_OK;
    ok = ok && kvs_compare_and_set(db, S("empty"), (const uint8_t *)8, 99, 0, S("x"), 1,
                                   &swapped) == KVS_OK && swapped == 0;
    ok = ok && kvs_compare_and_set(db, S("empty"), NULL, 0, 1, (const uint8_t *)8, 99, 0,
                                   &swapped) == KVS_OK && swapped == 1;
    ok = ok && is_missing(db, S("empty"));
    /* Binary bytes, NUL included, compare whole. */
    ok = ok && kvs_set(db, S("bin"), S("a\0b")) == KVS_OK;
    ok = ok && kvs_compare_and_set(db, S("bin"), S("a"), 1, S("c"), 1, &swapped) == KVS_OK &&
         swapped == 0;
    ok = ok && kvs_compare_and_set(db, S("bin"), S("a\0b"), 1, S("c\0d"), 1, &swapped) ==
                   KVS_OK && swapped == 1;
    ok = ok && has_value(db, S("bin"), "c\0d", 3);
    kvs_close(db);
    CHECK(ok);
}

static void compare_and_set_checks_its_arguments(void)
{
    kvs_db *db = open_or_null("cas_args");
    CHECK(db != NULL);
    int swapped = -1;
    int ok = kvs_set(db, S("k"), S("v")) == KVS_OK;
    /* NULL swapped_out, NULL db, NULL data with a length: refused, nothing changes. */
    ok = ok && kvs_compare_and_set(db, S("k"), S("v"), 1, S("w"), 1, NULL) ==
                   KVS_INVALID_ARGUMENT;
    ok = ok && cas(NULL, "k", "v", "w", &swapped) == KVS_INVALID_ARGUMENT && swapped == 0;
    swapped = -1;
    ok = ok && kvs_compare_and_set(db, S("k"), NULL, 1, 1, S("w"), 1, &swapped) ==
                   KVS_INVALID_ARGUMENT && swapped == 0;
    ok = ok && kvs_compare_and_set(db, S("k"), S("v"), 1, NULL, 1, 1, &swapped) ==
                   KVS_INVALID_ARGUMENT;
    ok = ok && has_value(db, S("k"), "v", 1);
    /* A key over the 1 MiB limit: refused, as by kvs_set(). */
    size_t len = ((size_t)1 << 20) + 1;
    uint8_t *key = calloc(len, 1);
    ok = ok && key != NULL &&
         kvs_compare_and_set(db, key, len, NULL, 0, 0, S("v"), 1, &swapped) ==
             KVS_INVALID_ARGUMENT;
    free(key);
    ok = ok && has_value(db, S("k"), "v", 1);
    kvs_close(db);
    CHECK(ok);
}

#define CAS_THREADS 4
#define CAS_STEPS 200

struct incrementer {
    kvs_db *db;
    int errors;
    int retries;
};

/* Adds 1 to the decimal counter "n" CAS_STEPS times: read, compute, compare-and-set, retry. */
static void *incrementer_run(void *arg)
{
    struct incrementer *w = arg;
    for (int i = 0; i < CAS_STEPS; i++) {
        for (;;) {
            uint8_t *old = NULL;
            size_t old_len = 0;
            kvs_status status = kvs_get(w->db, S("n"), &old, &old_len);
            if (status != KVS_OK && status != KVS_NOT_FOUND) {
                w->errors++;
                break;
            }
            char digits[32] = {0};
            if (old_len >= sizeof digits) {
                kvs_value_free(old, old_len);
                w->errors++;
                break;
            }
            if (old_len > 0)
                memcpy(digits, old, old_len);
            long n = status == KVS_OK ? strtol(digits, NULL, 10) : 0;
            char next[32];
            int next_len = snprintf(next, sizeof next, "%ld", n + 1);
            int swapped = 0;
            /* An empty value (NULL, 0) with KVS_OK is present; the counter never is empty. */
            status = kvs_compare_and_set(w->db, S("n"), old, old_len, status == KVS_OK,
                                         (const uint8_t *)next, (size_t)next_len, 1, &swapped);
            kvs_value_free(old, old_len);
            if (status != KVS_OK) {
                w->errors++;
                break;
            }
            if (swapped)
                break;
            w->retries++;
        }
    }
    return NULL;
}

static void threads_increment_a_counter_with_compare_and_set(void)
{
    kvs_db *db = open_or_null("cas_threads");
    CHECK(db != NULL);
    pthread_t threads[CAS_THREADS];
    struct incrementer workers[CAS_THREADS];
    int started = 0;
    for (int t = 0; t < CAS_THREADS; t++) {
        workers[t] = (struct incrementer){.db = db, .errors = 0, .retries = 0};
        if (pthread_create(&threads[t], NULL, incrementer_run, &workers[t]) == 0)
            started++;
    }
    int errors = 0;
    for (int t = 0; t < started; t++) {
        pthread_join(threads[t], NULL);
        errors += workers[t].errors;
    }
    char want[32];
    int want_len = snprintf(want, sizeof want, "%d", CAS_THREADS * CAS_STEPS);
    int ok = has_value(db, S("n"), want, (size_t)want_len);
    kvs_close(db);
    /* Reopened: the last swap is on disk. */
    kvs_db *again = open_or_null("cas_threads");
    CHECK(again != NULL);
    int kept = has_value(again, S("n"), want, (size_t)want_len);
    kvs_close(again);
    CHECK(started == CAS_THREADS);
    CHECK(errors == 0);
    CHECK(ok);
    CHECK(kept);
}

/* ---- checkpoints -------------------------------------------------------------------- */

/* One writer thread overwriting "counter" with 1, 2, 3...: `issued` is the last value it
 * started to write, `acked` the last one kvs_set() returned KVS_OK for. */
struct counter_writer {
    kvs_db *db;
    unsigned long issued;
    unsigned long acked;
    int stop;
    int errors;
};

static void *counter_run(void *arg)
{
    struct counter_writer *w = arg;
    char value[32];
    for (unsigned long n = 1; !__atomic_load_n(&w->stop, __ATOMIC_SEQ_CST); n++) {
        int vl = snprintf(value, sizeof value, "%lu", n);
        __atomic_store_n(&w->issued, n, __ATOMIC_SEQ_CST);
        if (kvs_set(w->db, S("counter"), (const uint8_t *)value, (size_t)vl) != KVS_OK)
            w->errors++;
        __atomic_store_n(&w->acked, n, __ATOMIC_SEQ_CST);
    }
    return NULL;
}

/* The counter's value in `db`, or 0 if it is missing or not a number. */
static unsigned long counter_in(kvs_db *db)
{
    uint8_t *value = NULL;
    size_t len = 0;
    unsigned long n = 0;
    if (kvs_get(db, S("counter"), &value, &len) == KVS_OK && len > 0 && len < 32) {
        char text[32];
        memcpy(text, value, len);
        text[len] = '\0';
        n = strtoul(text, NULL, 10);
    }
    kvs_value_free(value, len);
    return n;
}

/* A checkpoint of `engine` taken while a thread writes holds a counter value between the
 * last one acknowledged before the call and the last one issued before it returned; the copy
 * opens as a store of its own. */
static void checkpoint_while_writing(const char *engine, const char *name)
{
    char dir[4096], dest[4096];
    test_dir(dir, sizeof dir, name);
    snprintf(dest, sizeof dest, "%s/%s-copy", scratch, name);
    kvs_db *db = NULL;
    CHECK_STATUS(kvs_open_engine(dir, engine, &db), KVS_OK);
    struct counter_writer w = {.db = db};
    pthread_t thread;
    if (pthread_create(&thread, NULL, counter_run, &w) != 0) {
        kvs_close(db);
        CHECK(!"pthread_create");
    }
    while (__atomic_load_n(&w.acked, __ATOMIC_SEQ_CST) < 50)
        sched_yield();
    unsigned long lower = __atomic_load_n(&w.acked, __ATOMIC_SEQ_CST);
    kvs_status status = kvs_checkpoint(db, dest);
    unsigned long upper = __atomic_load_n(&w.issued, __ATOMIC_SEQ_CST);
    /* The writer goes on after the checkpoint. */
    while (__atomic_load_n(&w.acked, __ATOMIC_SEQ_CST) < upper + 20)
        sched_yield();
    __atomic_store_n(&w.stop, 1, __ATOMIC_SEQ_CST);
    pthread_join(thread, NULL);
    unsigned long source_counter = counter_in(db);
    kvs_close(db);
    CHECK(w.errors == 0);
    CHECK_STATUS(status, KVS_OK);

    kvs_db *copy = NULL;
    CHECK_STATUS(kvs_open(dest, &copy), KVS_OK);
    unsigned long copied = counter_in(copy);
    int independent = kvs_set(copy, S("only-in-copy"), S("1")) == KVS_OK;
    kvs_close(copy);
    if (copied < lower || copied > upper)
        fprintf(stderr, "    counter %lu outside [%lu, %lu]\n", copied, lower, upper);
    CHECK(lower <= copied && copied <= upper);
    CHECK(source_counter > copied);
    CHECK(independent);
    /* The source is unaffected by the copy's write. */
    CHECK_STATUS(kvs_open(dir, &db), KVS_OK);
    int untouched = counter_in(db) == source_counter && is_missing(db, S("only-in-copy"));
    kvs_close(db);
    CHECK(untouched);
}

static void kvs_checkpoint_of_a_live_store(void)
{
    checkpoint_while_writing("kvs", "checkpoint_kvs");
}

static void sled_checkpoint_of_a_live_store(void)
{
    checkpoint_while_writing("sled", "checkpoint_sled");
}

static void checkpoint_refuses_a_non_empty_destination(void)
{
    kvs_db *db = open_or_null("checkpoint_refused");
    CHECK(db != NULL);
    char dest[4096], precious[4200];
    snprintf(dest, sizeof dest, "%s/checkpoint_refused-dest", scratch);
    snprintf(precious, sizeof precious, "%s/precious", dest);
    int made = mkdir(dest, 0700) == 0;
    FILE *f = made ? fopen(precious, "w") : NULL;
    if (f) {
        fputs("keep me", f);
        fclose(f);
    }
    kvs_status full = kvs_checkpoint(db, dest);
    const char *message = kvs_last_error();
    int names_dest = message != NULL && strstr(message, "not empty") != NULL;
    kvs_status null_dest = kvs_checkpoint(db, NULL);
    kvs_status empty_dest = kvs_checkpoint(db, "");
    kvs_status null_db = kvs_checkpoint(NULL, dest);
    kvs_close(db);
    CHECK(made && f != NULL);
    CHECK_STATUS(full, KVS_IO_ERROR);
    CHECK(names_dest);
    CHECK_STATUS(null_dest, KVS_INVALID_ARGUMENT);
    CHECK_STATUS(empty_dest, KVS_INVALID_ARGUMENT);
    CHECK_STATUS(null_db, KVS_INVALID_ARGUMENT);
    /* Untouched: the one file, with its bytes. */
    char engine_file[4200], buf[16] = {0};
    snprintf(engine_file, sizeof engine_file, "%s/engine", dest);
    struct stat st;
    CHECK(stat(engine_file, &st) != 0 && errno == ENOENT);
    f = fopen(precious, "r");
    CHECK(f != NULL);
    size_t got = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    CHECK(got == 7 && strcmp(buf, "keep me") == 0);
}

/* ---- kvs_open_with() and kvs_options -------------------------------------------------- */

/* The number of `<id>.log` files in `dir`, or -1 if it cannot be read. */
static int count_log_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int count = 0;
    struct dirent *entry;
    while ((entry = readdir(d)) != NULL) {
        size_t len = strlen(entry->d_name);
        if (len > 4 && strcmp(entry->d_name + len - 4, ".log") == 0)
            count++;
    }
    closedir(d);
    return count;
}

static void options_init_fills_the_defaults(void)
{
    kvs_options options;
    memset(&options, 0xAB, sizeof options);
    CHECK_STATUS(kvs_options_init(&options), KVS_OK);
    CHECK(options.size == sizeof(kvs_options));
    CHECK(options.sync == KVS_SYNC_OS);
    CHECK(options.read_only == 0);
    CHECK(options.max_file_size == (uint64_t)1 << 30);
    CHECK(options.compaction_min_stale == (uint64_t)4 << 20);
    CHECK_STATUS(kvs_options_init(NULL), KVS_INVALID_ARGUMENT);
}

static void open_with_sync_always_and_small_files(void)
{
    char dir[4096];
    test_dir(dir, sizeof dir, "open_with_sync");
    kvs_options options;
    CHECK_STATUS(kvs_options_init(&options), KVS_OK);
    options.sync = KVS_SYNC_ALWAYS;
    options.max_file_size = 4096;
    options.compaction_min_stale = UINT64_MAX;
    kvs_db *db = NULL;
    CHECK_STATUS(kvs_open_with(dir, NULL, &options, &db), KVS_OK);
    uint8_t value[200];
    memset(value, 'v', sizeof value);
    char key[32];
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof key, "key-%03d", i);
        CHECK_STATUS(kvs_set(db, (const uint8_t *)key, strlen(key), value, sizeof value), KVS_OK);
    }
    kvs_close(db);
    /* 100 records of over 200 bytes in files of 4 KiB: the size reached the store. */
    CHECK(count_log_files(dir) >= 5);
    /* NULL options: the defaults, the recorded engine. */
    db = NULL;
    CHECK_STATUS(kvs_open_with(dir, NULL, NULL, &db), KVS_OK);
    int ok = has_value(db, S("key-099"), value, sizeof value);
    kvs_close(db);
    CHECK(ok);
    db = NULL;
    CHECK_STATUS(kvs_open_with(dir, "kvs", &options, &db), KVS_OK);
    ok = has_value(db, S("key-000"), value, sizeof value);
    kvs_close(db);
    CHECK(ok);
}

static void read_only_open_serves_reads_and_refuses_writes(void)
{
    char dir[4096], missing[4096];
    test_dir(dir, sizeof dir, "read_only");
    kvs_db *db = NULL;
    CHECK_STATUS(kvs_open(dir, &db), KVS_OK);
    CHECK_STATUS(kvs_set(db, S("k"), S("v")), KVS_OK);
    kvs_close(db);

    kvs_options options;
    CHECK_STATUS(kvs_options_init(&options), KVS_OK);
    options.read_only = 1;
    kvs_db *reader = NULL, *second = NULL;
    CHECK_STATUS(kvs_open_with(dir, NULL, &options, &reader), KVS_OK);
    int read_ok = has_value(reader, S("k"), "v", 1);
    kvs_status set = kvs_set(reader, S("k"), S("new"));
    const char *message = kvs_last_error();
    int message_ok = message != NULL && strstr(message, "read-only") != NULL;
    kvs_status remove = kvs_remove(reader, S("k"));
    kvs_status remove_missing = kvs_remove(reader, S("missing"));
    int still_ok = has_value(reader, S("k"), "v", 1);
    /* Read-only handles share the directory; a writer is kept out. */
    kvs_status shared = kvs_open_with(dir, "kvs", &options, &second);
    kvs_db *writer = (kvs_db *)&writer;
    kvs_status write_open = kvs_open(dir, &writer);
    kvs_close(second);
    kvs_close(reader);
    CHECK(read_ok && still_ok);
    CHECK(set == KVS_INVALID_ARGUMENT && message_ok);
    CHECK(remove == KVS_INVALID_ARGUMENT && remove_missing == KVS_INVALID_ARGUMENT);
    CHECK(shared == KVS_OK);
    CHECK(write_open == KVS_IO_ERROR && writer == NULL);
    /* Once the readers are gone, a writer gets in. */
    writer = open_or_null("read_only");
    CHECK(writer != NULL);
    kvs_close(writer);

    /* Read-only creates nothing: a missing directory stays missing. */
    test_dir(missing, sizeof missing, "read_only_missing");
    db = (kvs_db *)&db;
    CHECK_STATUS(kvs_open_with(missing, NULL, &options, &db), KVS_IO_ERROR);
    CHECK(db == NULL);
    struct stat st;
    CHECK(stat(missing, &st) != 0 && errno == ENOENT);
}

static void read_only_sled_is_refused(void)
{
    char dir[4096];
    test_dir(dir, sizeof dir, "read_only_sled");
    kvs_db *db = NULL;
    CHECK_STATUS(kvs_open_engine(dir, "sled", &db), KVS_OK);
    CHECK_STATUS(kvs_set(db, S("k"), S("v")), KVS_OK);
    kvs_close(db);
    kvs_options options;
    CHECK_STATUS(kvs_options_init(&options), KVS_OK);
    options.read_only = 1;
    db = (kvs_db *)&db;
    CHECK_STATUS(kvs_open_with(dir, "sled", &options, &db), KVS_INVALID_ARGUMENT);
    CHECK(db == NULL);
    const char *message = kvs_last_error();
    CHECK(message != NULL && strstr(message, "sled") != NULL && strstr(message, "read-only"));
    CHECK_STATUS(kvs_open_with(dir, NULL, &options, &db), KVS_INVALID_ARGUMENT);
    CHECK(db == NULL);
}

/* Opens a new directory with `options`: must be KVS_INVALID_ARGUMENT naming `field`, with
 * nothing created. Returns whether it was. */
static int refused_naming(const kvs_options *options, const char *name, const char *field)
{
    char dir[4096];
    test_dir(dir, sizeof dir, name);
    kvs_db *db = (kvs_db *)&db;
    kvs_status status = kvs_open_with(dir, NULL, options, &db);
    const char *message = kvs_last_error();
    struct stat st;
    int ok = status == KVS_INVALID_ARGUMENT && db == NULL && message != NULL &&
             strstr(message, field) != NULL && stat(dir, &st) != 0 && errno == ENOENT;
    if (!ok)
        fprintf(stderr, "    %s: status %d, message %s\n", name, (int)status,
                message ? message : "NULL");
    if (status == KVS_OK)
        kvs_close(db);
    return ok;
}

static void bad_options_are_invalid_argument(void)
{
    kvs_options options;
    CHECK_STATUS(kvs_options_init(&options), KVS_OK);
    options.sync = 7;
    CHECK(refused_naming(&options, "bad_sync", "sync"));
    CHECK_STATUS(kvs_options_init(&options), KVS_OK);
    options.read_only = 2;
    CHECK(refused_naming(&options, "bad_read_only", "read_only"));
    CHECK_STATUS(kvs_options_init(&options), KVS_OK);
    options.max_file_size = 100;
    CHECK(refused_naming(&options, "small_files", "max_file_size"));
    options.max_file_size = ((uint64_t)1 << 30) + 1;
    CHECK(refused_naming(&options, "large_files", "max_file_size"));
    options.max_file_size = 0;
    CHECK(refused_naming(&options, "zero_files", "max_file_size"));
    /* A struct not filled by kvs_options_init(). */
    CHECK_STATUS(kvs_options_init(&options), KVS_OK);
    options.size = 0;
    CHECK(refused_naming(&options, "size_zero", "size"));
    /* A struct from a newer kvs.h, larger than this library knows. */
    struct {
        kvs_options options;
        uint64_t newer_field;
    } newer;
    CHECK_STATUS(kvs_options_init(&newer.options), KVS_OK);
    newer.options.size = sizeof newer;
    newer.newer_field = 1;
    CHECK(refused_naming(&newer.options, "size_newer", "newer kvs.h"));
    /* The open functions' own argument checks still hold. */
    CHECK_STATUS(kvs_options_init(&options), KVS_OK);
    kvs_db *db = (kvs_db *)&db;
    CHECK_STATUS(kvs_open_with(NULL, NULL, &options, &db), KVS_INVALID_ARGUMENT);
    CHECK(db == NULL);
    char dir[4096];
    test_dir(dir, sizeof dir, "bad_engine_with");
    CHECK_STATUS(kvs_open_with(dir, "rocksdb", &options, &db), KVS_INVALID_ARGUMENT);
    CHECK_STATUS(kvs_open_with(dir, NULL, &options, NULL), KVS_INVALID_ARGUMENT);
}

/* ---- engine v2: batches ------------------------------------------------------------- */

static kvs_db *open_engine_or_null(const char *name, const char *engine)
{
    char dir[4096];
    test_dir(dir, sizeof dir, name);
    kvs_db *db = NULL;
    if (kvs_open_engine(dir, engine, &db) != KVS_OK)
        return NULL;
    return db;
}

/* Whether `key` is set with the deadline `want` (0: set without a deadline). */
static int has_deadline(kvs_db *db, const uint8_t *key, size_t key_len, uint64_t want)
{
    int has = -1;
    uint64_t deadline = 12345;
    kvs_status status = kvs_expiry(db, key, key_len, &has, &deadline);
    return status == KVS_OK && has == (want != 0) && deadline == want;
}

/* A batch of every kind of operation lands whole; applying it leaves it as it was. */
static void batch_round_trip(const char *engine, const char *name)
{
    kvs_db *db = open_engine_or_null(name, engine);
    CHECK(db != NULL);
    uint64_t later = kvs_now_millis() + 3600 * 1000;
    kvs_batch *batch = (kvs_batch *)&batch; /* garbage kvs_batch_new must overwrite */
    size_t len = 99;
    int ok = kvs_set(db, S("a"), S("old a")) == KVS_OK && kvs_set(db, S("b"), S("old b")) == KVS_OK;
    ok = ok && kvs_batch_new(&batch) == KVS_OK && batch != NULL;
    ok = ok && kvs_batch_len(batch, &len) == KVS_OK && len == 0;
    ok = ok && kvs_batch_set(batch, S("a"), S("new a")) == KVS_OK;
    ok = ok && kvs_batch_set(batch, S("c\0bin"), S("c\0value")) == KVS_OK;
    ok = ok && kvs_batch_remove(batch, S("b")) == KVS_OK;
    ok = ok && kvs_batch_remove(batch, S("never set")) == KVS_OK; /* not an error */
    ok = ok && kvs_batch_set_with_deadline(batch, S("d"), S("expires"), later) == KVS_OK;
    ok = ok && kvs_batch_set(batch, S("twice"), S("first")) == KVS_OK;
    ok = ok && kvs_batch_set(batch, S("twice"), S("second")) == KVS_OK;
    ok = ok && kvs_batch_set(batch, NULL, 0, NULL, 0) == KVS_OK; /* empty key, empty value */
    ok = ok && kvs_batch_len(batch, &len) == KVS_OK && len == 8;
    kvs_status applied = ok ? kvs_apply_batch(db, batch) : KVS_ERROR;
    int landed = has_value(db, S("a"), "new a", 5) && has_value(db, S("c\0bin"), "c\0value", 7) &&
                 is_missing(db, S("b")) && is_missing(db, S("never set")) &&
                 has_value(db, S("d"), "expires", 7) && has_deadline(db, S("d"), later) &&
                 has_value(db, S("twice"), "second", 6) && has_value(db, NULL, 0, "", 0) &&
                 has_deadline(db, S("a"), 0);
    /* Not consumed: the same operations are still there, and apply again. */
    int kept = kvs_batch_len(batch, &len) == KVS_OK && len == 8;
    int again = kvs_set(db, S("a"), S("changed")) == KVS_OK && kvs_apply_batch(db, batch) == KVS_OK &&
                has_value(db, S("a"), "new a", 5);
    /* Cleared, it is empty; an empty batch applies and writes nothing. */
    int cleared = kvs_batch_clear(batch) == KVS_OK && kvs_batch_len(batch, &len) == KVS_OK &&
                  len == 0 && kvs_apply_batch(db, batch) == KVS_OK &&
                  has_value(db, S("a"), "new a", 5);
    kvs_batch_free(batch);
    kvs_close(db);
    CHECK(ok);
    CHECK_STATUS(applied, KVS_OK);
    CHECK(landed);
    CHECK(kept && again && cleared);
    /* Reopened: the batch is on disk, deadline included. */
    db = open_engine_or_null(name, engine);
    CHECK(db != NULL);
    int durable = has_value(db, S("c\0bin"), "c\0value", 7) && is_missing(db, S("b")) &&
                  has_deadline(db, S("d"), later);
    kvs_close(db);
    CHECK(durable);
}

static void kvs_batch_applies_every_operation(void)
{
    batch_round_trip("kvs", "batch_kvs");
}

static void sled_batch_applies_every_operation(void)
{
    batch_round_trip("sled", "batch_sled");
}

/* A key over the size limit fails the whole batch: nothing of it is written. */
static void batch_with_an_oversized_key_writes_nothing(void)
{
    kvs_db *db = open_or_null("batch_oversized");
    CHECK(db != NULL);
    size_t len = ((size_t)1 << 20) + 1;
    uint8_t *key = calloc(len, 1);
    kvs_batch *batch = NULL;
    int built = key != NULL && kvs_set(db, S("untouched"), S("before")) == KVS_OK &&
                kvs_batch_new(&batch) == KVS_OK &&
                kvs_batch_set(batch, S("untouched"), S("after")) == KVS_OK &&
                kvs_batch_set(batch, S("small"), S("v")) == KVS_OK &&
                kvs_batch_set(batch, key, len, S("v")) == KVS_OK;
    free(key);
    kvs_status status = built ? kvs_apply_batch(db, batch) : KVS_OK;
    int nothing = has_value(db, S("untouched"), "before", 6) && is_missing(db, S("small"));
    kvs_batch_free(batch);
    kvs_close(db);
    CHECK(built);
    CHECK_STATUS(status, KVS_INVALID_ARGUMENT);
    CHECK(nothing);
}

static void batch_checks_its_arguments(void)
{
    kvs_db *db = open_or_null("batch_args");
    CHECK(db != NULL);
    kvs_batch *batch = NULL;
    size_t len = 7;
    kvs_status statuses[] = {
        kvs_batch_new(NULL),
        kvs_batch_set(NULL, S("k"), S("v")),
        kvs_batch_set_with_deadline(NULL, S("k"), S("v"), 1),
        kvs_batch_remove(NULL, S("k")),
        kvs_batch_clear(NULL),
        kvs_batch_len(NULL, &len),
        kvs_apply_batch(db, NULL),
    };
    int len_cleared = len == 0;
    CHECK_STATUS(kvs_batch_new(&batch), KVS_OK);
    kvs_status with_batch[] = {
        kvs_batch_set(batch, NULL, 1, S("v")),
        kvs_batch_set(batch, S("k"), NULL, 1),
        kvs_batch_set_with_deadline(batch, NULL, 1, S("v"), 1),
        kvs_batch_set_with_deadline(batch, S("k"), NULL, 1, 1),
        kvs_batch_remove(batch, NULL, 1),
        kvs_batch_len(batch, NULL),
        kvs_apply_batch(NULL, batch),
    };
    const char *message = kvs_last_error();
    int message_ok = message != NULL && strstr(message, "db is NULL") != NULL;
    /* None of the refused operations went into the batch. */
    int empty = kvs_batch_len(batch, &len) == KVS_OK && len == 0;
    kvs_batch_free(batch);
    kvs_batch_free(NULL); /* no-op */
    kvs_close(db);
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++) {
        if (statuses[i] != KVS_INVALID_ARGUMENT)
            check_failed(__FILE__, __LINE__, "call %zu returned %d", i, (int)statuses[i]);
    }
    for (size_t i = 0; i < sizeof with_batch / sizeof with_batch[0]; i++) {
        if (with_batch[i] != KVS_INVALID_ARGUMENT)
            check_failed(__FILE__, __LINE__, "call %zu on a batch returned %d", i,
                         (int)with_batch[i]);
    }
    CHECK(len_cleared);
    CHECK(message_ok);
    CHECK(empty);
}

#define GENERATION_KEYS 10

/* Run in a forked child: opens the store and applies batches that set every key to the
 * generation number, 1, 2, 3..., writing each generation to `ack` once applied. Never
 * returns: the parent kills it. */
static void apply_generations(const char *dir, int ack)
{
    kvs_db *db = NULL;
    if (kvs_open(dir, &db) != KVS_OK)
        raise(SIGKILL);
    static uint8_t value[4096];
    char key[32];
    kvs_batch *batch = NULL;
    if (kvs_batch_new(&batch) != KVS_OK)
        raise(SIGKILL);
    for (uint32_t generation = 1;; generation++) {
        kvs_batch_clear(batch);
        memset(value, 'a' + (int)(generation % 26), sizeof value);
        memcpy(value, &generation, sizeof generation);
        for (int i = 0; i < GENERATION_KEYS; i++) {
            int kl = snprintf(key, sizeof key, "gen-%d", i);
            kvs_batch_set(batch, (const uint8_t *)key, (size_t)kl, value, sizeof value);
        }
        if (kvs_apply_batch(db, batch) != KVS_OK)
            raise(SIGKILL);
        if (write(ack, &generation, sizeof generation) != sizeof generation)
            raise(SIGKILL);
    }
}

/* A process killed with SIGKILL while it applies batches leaves every batch whole: after
 * reopening, all keys hold one generation, no older than the last one acknowledged. */
static void batches_survive_kill_9_whole(void)
{
    char dir[4096];
    test_dir(dir, sizeof dir, "batch_kill9");
    kvs_db *db = NULL;
    CHECK_STATUS(kvs_open(dir, &db), KVS_OK); /* creates the store; closed before the fork */
    kvs_close(db);
    int acks[2];
    CHECK(pipe(acks) == 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        close(acks[0]);
        apply_generations(dir, acks[1]);
    }
    close(acks[1]);
    CHECK(pid > 0);
    /* Let it acknowledge some batches, then kill it in the middle of the next ones. */
    uint32_t acked = 0, generation;
    while (acked < 30 && read(acks[0], &generation, sizeof generation) == sizeof generation)
        acked = generation;
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    while (read(acks[0], &generation, sizeof generation) == sizeof generation)
        acked = generation;
    close(acks[0]);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    CHECK(acked >= 30);

    CHECK_STATUS(kvs_open(dir, &db), KVS_OK);
    uint32_t found[GENERATION_KEYS] = {0};
    int whole = 1;
    char key[32];
    for (int i = 0; i < GENERATION_KEYS; i++) {
        int kl = snprintf(key, sizeof key, "gen-%d", i);
        uint8_t *value = NULL;
        size_t len = 0;
        if (kvs_get(db, (const uint8_t *)key, (size_t)kl, &value, &len) != KVS_OK || len != 4096) {
            whole = 0;
        } else {
            memcpy(&found[i], value, sizeof found[i]);
            for (size_t j = sizeof found[i]; j < len; j++)
                whole = whole && value[j] == 'a' + (int)(found[i] % 26);
        }
        kvs_value_free(value, len);
    }
    kvs_close(db);
    for (int i = 1; i < GENERATION_KEYS; i++)
        whole = whole && found[i] == found[0];
    if (!whole || found[0] < acked || found[0] > acked + 1)
        fprintf(stderr, "    generations %u..%u found, last acknowledged %u\n",
                (unsigned)found[0], (unsigned)found[GENERATION_KEYS - 1], (unsigned)acked);
    CHECK(whole);
    /* Acknowledged batches are kept; at most the one in flight at the kill is also there. */
    CHECK(found[0] >= acked && found[0] <= acked + 1);
}

/* ---- engine v2: deadlines ------------------------------------------------------------ */

static void deadlines(const char *engine, const char *name)
{
    kvs_db *db = open_engine_or_null(name, engine);
    CHECK(db != NULL);
    uint64_t now = kvs_now_millis();
    uint64_t later = now + 3600 * 1000;
    int found = -1, persisted = -1, swapped = -1, has = -1;
    uint64_t deadline = 77;
    int ok = 1;
    /* A deadline ahead: the key is there, with it. */
    ok = ok && kvs_set_with_deadline(db, S("k"), S("v"), later) == KVS_OK;
    ok = ok && has_value(db, S("k"), "v", 1) && has_deadline(db, S("k"), later);
    /* compare-and-set keeps it; a plain set clears it. */
    ok = ok && cas(db, "k", "v", "w", &swapped) == KVS_OK && swapped == 1;
    ok = ok && has_deadline(db, S("k"), later);
    ok = ok && kvs_set(db, S("k"), S("x")) == KVS_OK && has_deadline(db, S("k"), 0);
    /* expire_at gives an existing key a deadline; a missing key is reported, not created. */
    ok = ok && kvs_expire_at(db, S("k"), later + 1, &found) == KVS_OK && found == 1;
    ok = ok && has_deadline(db, S("k"), later + 1) && has_value(db, S("k"), "x", 1);
    ok = ok && kvs_expire_at(db, S("missing"), later, &found) == KVS_OK && found == 0;
    ok = ok && is_missing(db, S("missing"));
    /* persist removes a deadline once. */
    ok = ok && kvs_persist(db, S("k"), &persisted) == KVS_OK && persisted == 1;
    ok = ok && has_deadline(db, S("k"), 0) && has_value(db, S("k"), "x", 1);
    ok = ok && kvs_persist(db, S("k"), &persisted) == KVS_OK && persisted == 0;
    ok = ok && kvs_persist(db, S("missing"), &persisted) == KVS_OK && persisted == 0;
    /* A deadline that has passed removes the key, by either call. */
    ok = ok && kvs_set_with_deadline(db, S("past"), S("v"), now - 1) == KVS_OK;
    ok = ok && is_missing(db, S("past"));
    ok = ok && kvs_expire_at(db, S("k"), 1, &found) == KVS_OK && found == 1;
    ok = ok && is_missing(db, S("k"));
    /* kvs_expiry of a missing key: KVS_NOT_FOUND, outputs 0. */
    kvs_status missing = kvs_expiry(db, S("k"), &has, &deadline);
    int missing_ok = missing == KVS_NOT_FOUND && has == 0 && deadline == 0;
    /* A key that expires while the store is open: gone once the clock passes the deadline
     * (the wait is for the clock, not a bound on the store). */
    uint64_t soon = kvs_now_millis() + 50;
    ok = ok && kvs_set_with_deadline(db, S("soon"), S("v"), soon) == KVS_OK;
    struct timespec nap = {.tv_sec = 0, .tv_nsec = 10 * 1000 * 1000};
    while (kvs_now_millis() < soon)
        nanosleep(&nap, NULL);
    int expired = is_missing(db, S("soon")) &&
                  kvs_expiry(db, S("soon"), &has, &deadline) == KVS_NOT_FOUND;
    /* Deadlines survive reopening. */
    ok = ok && kvs_set_with_deadline(db, S("kept"), S("v"), later) == KVS_OK;
    kvs_close(db);
    CHECK(ok);
    CHECK(missing_ok);
    CHECK(expired);
    db = open_engine_or_null(name, engine);
    CHECK(db != NULL);
    int durable = has_deadline(db, S("kept"), later);
    kvs_close(db);
    CHECK(durable);
}

static void kvs_deadlines_expire_keys(void)
{
    deadlines("kvs", "deadlines_kvs");
}

static void sled_deadlines_expire_keys(void)
{
    deadlines("sled", "deadlines_sled");
}

static void deadline_calls_check_their_arguments(void)
{
    kvs_db *db = open_or_null("deadline_args");
    CHECK(db != NULL);
    int flag = 7;
    uint64_t deadline = 7;
    CHECK_STATUS(kvs_set(db, S("k"), S("v")), KVS_OK);
    kvs_status statuses[] = {
        kvs_set_with_deadline(NULL, S("k"), S("v"), 1),
        kvs_set_with_deadline(db, NULL, 1, S("v"), 1),
        kvs_set_with_deadline(db, S("k"), NULL, 1, 1),
        kvs_expire_at(NULL, S("k"), 1, &flag),
        kvs_expire_at(db, S("k"), 1, NULL),
        kvs_expire_at(db, NULL, 1, 1, &flag),
        kvs_persist(NULL, S("k"), &flag),
        kvs_persist(db, S("k"), NULL),
        kvs_expiry(NULL, S("k"), &flag, &deadline),
        kvs_expiry(db, S("k"), NULL, &deadline),
        kvs_expiry(db, S("k"), &flag, NULL),
        kvs_expiry(db, NULL, 1, &flag, &deadline),
    };
    int cleared = flag == 0 && deadline == 0;
    /* None of the refused calls changed the key. */
    int untouched = has_value(db, S("k"), "v", 1) && has_deadline(db, S("k"), 0);
    kvs_close(db);
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++) {
        if (statuses[i] != KVS_INVALID_ARGUMENT)
            check_failed(__FILE__, __LINE__, "call %zu returned %d", i, (int)statuses[i]);
    }
    CHECK(cleared);
    CHECK(untouched);
    /* The clock is the real-time clock, in milliseconds. */
    struct timespec ts;
    CHECK(clock_gettime(CLOCK_REALTIME, &ts) == 0);
    uint64_t mine = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    uint64_t theirs = kvs_now_millis();
    /* Read one after the other: kvs's reading is not earlier, and within a minute (any
     * stall of a loaded machine is far shorter; a wrong unit would be off by 1000x). */
    CHECK(theirs >= mine && theirs - mine < 60 * 1000);
}

/* ---- engine v2: kvs_get_many ---------------------------------------------------------- */

static void get_many(const char *engine, const char *name)
{
    kvs_db *db = open_engine_or_null(name, engine);
    CHECK(db != NULL);
    CHECK_STATUS(kvs_set(db, S("a"), S("value a")), KVS_OK);
    CHECK_STATUS(kvs_set(db, S("empty"), NULL, 0), KVS_OK);
    CHECK_STATUS(kvs_set(db, S("b\0in"), S("b\0value")), KVS_OK);
    const uint8_t *keys[] = {(const uint8_t *)"a", (const uint8_t *)"missing",
                             (const uint8_t *)"empty", (const uint8_t *)"b\0in",
                             (const uint8_t *)"a"};
    size_t lens[] = {1, 7, 5, 4, 1};
    uint8_t *values[5];
    size_t value_lens[5];
    int found[5];
    for (int i = 0; i < 5; i++) {
        values[i] = (uint8_t *)&values; /* garbage the call must overwrite */
        value_lens[i] = 99;
        found[i] = 99;
    }
    kvs_status status = kvs_get_many(db, 5, keys, lens, values, value_lens, found);
    int ok = status == KVS_OK && found[0] == 1 && value_lens[0] == 7 &&
             memcmp(values[0], "value a", 7) == 0 && found[1] == 0 && values[1] == NULL &&
             value_lens[1] == 0 && found[2] == 1 && values[2] == NULL && value_lens[2] == 0 &&
             found[3] == 1 && value_lens[3] == 7 && memcmp(values[3], "b\0value", 7) == 0 &&
             found[4] == 1 && value_lens[4] == 7 && values[4] != values[0];
    if (status == KVS_OK) {
        for (int i = 0; i < 5; i++)
            kvs_value_free(values[i], value_lens[i]);
    }
    /* count 0 reads nothing, whatever the pointers. */
    kvs_status none = kvs_get_many(db, 0, NULL, NULL, NULL, NULL, NULL);
    kvs_close(db);
    CHECK_STATUS(status, KVS_OK);
    CHECK(ok);
    CHECK_STATUS(none, KVS_OK);
}

static void kvs_get_many_reads_every_key(void)
{
    get_many("kvs", "get_many_kvs");
}

static void sled_get_many_reads_every_key(void)
{
    get_many("sled", "get_many_sled");
}

static void get_many_checks_its_arguments(void)
{
    kvs_db *db = open_or_null("get_many_args");
    CHECK(db != NULL);
    CHECK_STATUS(kvs_set(db, S("a"), S("v")), KVS_OK);
    const uint8_t *keys[] = {(const uint8_t *)"a", NULL};
    size_t lens[] = {1, 3}; /* the second: NULL with a length */
    uint8_t *values[2] = {(uint8_t *)&values, (uint8_t *)&values};
    size_t value_lens[2] = {9, 9};
    int found[2] = {9, 9};
    kvs_status statuses[] = {
        kvs_get_many(db, 2, keys, lens, values, value_lens, found),
        kvs_get_many(NULL, 1, keys, lens, values, value_lens, found),
        kvs_get_many(db, 1, NULL, lens, values, value_lens, found),
        kvs_get_many(db, 1, keys, NULL, values, value_lens, found),
        kvs_get_many(db, 1, keys, lens, NULL, value_lens, found),
        kvs_get_many(db, 1, keys, lens, values, NULL, found),
        kvs_get_many(db, 1, keys, lens, values, value_lens, NULL),
        kvs_get_many(db, SIZE_MAX, keys, lens, values, value_lens, found),
    };
    /* Every failure leaves the outputs NULL / 0 (the SIZE_MAX call touches nothing). */
    int cleared = values[0] == NULL && values[1] == NULL && value_lens[0] == 0 &&
                  value_lens[1] == 0 && found[0] == 0 && found[1] == 0;
    kvs_close(db);
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++) {
        if (statuses[i] != KVS_INVALID_ARGUMENT)
            check_failed(__FILE__, __LINE__, "call %zu returned %d", i, (int)statuses[i]);
    }
    CHECK(cleared);
}

/* ---- engine v2: kvs_scan and kvs_iter ------------------------------------------------- */

#define SCAN_USERS 1000
#define SCAN_OTHERS 50

/* The number of the key "user:NNNN", or -1 for any other key. */
static int user_number(const uint8_t *key, size_t len)
{
    if (len != 9 || memcmp(key, "user:", 5) != 0)
        return -1;
    int n = 0;
    for (size_t i = 5; i < 9; i++) {
        if (key[i] < '0' || key[i] > '9')
            return -1;
        n = n * 10 + (key[i] - '0');
    }
    return n < SCAN_USERS ? n : -1;
}

static int fill_users(kvs_db *db)
{
    char key[32];
    int ok = 1;
    for (int i = 0; i < SCAN_USERS; i++) {
        int kl = snprintf(key, sizeof key, "user:%04d", i);
        ok = ok && kvs_set(db, (const uint8_t *)key, (size_t)kl, S("u")) == KVS_OK;
    }
    for (int i = 0; i < SCAN_OTHERS; i++) {
        int kl = snprintf(key, sizeof key, "other:%d", i);
        ok = ok && kvs_set(db, (const uint8_t *)key, (size_t)kl, S("o")) == KVS_OK;
    }
    return ok && kvs_set(db, NULL, 0, S("the empty key")) == KVS_OK;
}

/* Walks the whole store with kvs_scan() and the given filter, counting in `seen` how often
 * each user key came, and in *others the keys that are not user keys. While walking, it
 * removes an "other:" key and adds a "new:" one after each page when `churn` is set. Returns
 * whether every call succeeded and ended with cursor 0. */
static int walk(kvs_db *db, size_t count, const char *prefix, const char *pattern, int *seen,
                size_t *others, int *empty_key_seen, int churn)
{
    uint64_t cursor = 0;
    int pages = 0, removed = 0;
    *others = 0;
    *empty_key_seen = 0;
    memset(seen, 0, sizeof(int) * SCAN_USERS);
    do {
        kvs_scan_page *page = NULL;
        kvs_status status = kvs_scan(db, cursor, count, (const uint8_t *)prefix,
                                     prefix ? strlen(prefix) : 0, (const uint8_t *)pattern,
                                     pattern ? strlen(pattern) : 0, &page);
        if (status != KVS_OK || page == NULL)
            return 0;
        for (size_t i = 0; i < page->count; i++) {
            int n = user_number(page->keys[i].data, page->keys[i].len);
            if (n >= 0)
                seen[n]++;
            else if (page->keys[i].len == 0 && page->keys[i].data == NULL)
                (*empty_key_seen)++;
            else
                (*others)++;
        }
        if (page->count == 0 && page->keys != NULL)
            return 0;
        cursor = page->cursor;
        kvs_scan_page_free(page);
        if (churn) {
            char key[32];
            int kl = snprintf(key, sizeof key, "other:%d", removed++ % SCAN_OTHERS);
            kvs_status gone = kvs_remove(db, (const uint8_t *)key, (size_t)kl);
            if (gone != KVS_OK && gone != KVS_NOT_FOUND)
                return 0;
            kl = snprintf(key, sizeof key, "new:%d", pages);
            if (kvs_set(db, (const uint8_t *)key, (size_t)kl, S("n")) != KVS_OK)
                return 0;
        }
        /* A walk of N keys costs O(N) calls: far fewer than this bound means it is over. */
        if (++pages > 100000)
            return 0;
    } while (cursor != 0);
    return 1;
}

static void scans(const char *engine, const char *name)
{
    kvs_db *db = open_engine_or_null(name, engine);
    CHECK(db != NULL);
    int *seen = calloc(SCAN_USERS, sizeof(int));
    CHECK(seen != NULL);
    size_t others = 0;
    int empty = 0, ok = fill_users(db);
    int all_once = 1, prefixed = 1, matched = 1, churned = 1;
    /* Everything, 10 keys looked at per call: every key at least once. */
    int walked = ok && walk(db, 10, NULL, NULL, seen, &others, &empty, 0);
    for (int i = 0; i < SCAN_USERS; i++)
        all_once = all_once && seen[i] >= 1;
    all_once = all_once && others >= SCAN_OTHERS && empty >= 1;
    /* A prefix: only user:00NN. */
    walked = walked && walk(db, 7, "user:00", NULL, seen, &others, &empty, 0);
    for (int i = 0; i < SCAN_USERS; i++)
        prefixed = prefixed && (i < 100 ? seen[i] >= 1 : seen[i] == 0);
    prefixed = prefixed && others == 0 && empty == 0;
    /* A pattern, with a prefix: user:0NN7. */
    walked = walked && walk(db, 50, "user:0", "*7", seen, &others, &empty, 0);
    for (int i = 0; i < SCAN_USERS; i++)
        matched = matched && (i % 10 == 7 ? seen[i] >= 1 : seen[i] == 0);
    matched = matched && others == 0 && empty == 0;
    /* The empty pattern matches only the empty key. */
    walked = walked && walk(db, 100, NULL, "", seen, &others, &empty, 0);
    int empty_pattern = others == 0 && empty >= 1;
    for (int i = 0; i < SCAN_USERS; i++)
        empty_pattern = empty_pattern && seen[i] == 0;
    /* Writes during the walk: every key set throughout still comes. */
    walked = walked && walk(db, 10, NULL, NULL, seen, &others, &empty, 1);
    for (int i = 0; i < SCAN_USERS; i++)
        churned = churned && seen[i] >= 1;
    churned = churned && empty >= 1;
    free(seen);
    kvs_close(db);
    CHECK(ok);
    CHECK(walked);
    CHECK(all_once);
    CHECK(prefixed);
    CHECK(matched);
    CHECK(empty_pattern);
    CHECK(churned);
}

static void kvs_scan_walks_every_key(void)
{
    scans("kvs", "scan_kvs");
}

static void sled_scan_walks_every_key(void)
{
    scans("sled", "scan_sled");
}

static void scan_checks_its_arguments(void)
{
    kvs_db *db = open_or_null("scan_args");
    CHECK(db != NULL);
    kvs_scan_page *page = (kvs_scan_page *)&page;
    kvs_iter *iter = (kvs_iter *)&iter;
    kvs_status statuses[] = {
        kvs_scan(NULL, 0, 10, NULL, 0, NULL, 0, &page),
        kvs_scan(db, 0, 10, NULL, 0, NULL, 0, NULL),
        kvs_scan(db, 0, 0, NULL, 0, NULL, 0, &page),
        kvs_scan(db, 0, 10, NULL, 3, NULL, 0, &page),
        kvs_scan(db, 0, 10, NULL, 0, NULL, 3, &page),
        kvs_iter_new(NULL, NULL, 0, NULL, 0, &iter),
        kvs_iter_new(db, NULL, 0, NULL, 0, NULL),
        kvs_iter_new(db, NULL, 3, NULL, 0, &iter),
        kvs_iter_new(db, NULL, 0, NULL, 3, &iter),
        kvs_iter_next(NULL, (const uint8_t **)&page, (size_t *)&iter),
    };
    const char *message = kvs_last_error();
    int message_ok = message != NULL && strstr(message, "iter is NULL") != NULL;
    int cleared = page == NULL && iter == NULL;
    /* A live iterator refuses NULL outputs, and still works afterwards. */
    const uint8_t *key = NULL;
    size_t key_len = 0;
    kvs_status set = kvs_set(db, S("only"), S("v"));
    kvs_status made = kvs_iter_new(db, NULL, 0, NULL, 0, &iter);
    kvs_status no_key_out = made == KVS_OK ? kvs_iter_next(iter, NULL, &key_len) : KVS_ERROR;
    kvs_status no_len_out = made == KVS_OK ? kvs_iter_next(iter, &key, NULL) : KVS_ERROR;
    int still = made == KVS_OK && kvs_iter_next(iter, &key, &key_len) == KVS_OK &&
                key_len == 4 && memcmp(key, "only", 4) == 0;
    kvs_iter_free(iter);
    kvs_iter_free(NULL);      /* no-op */
    kvs_scan_page_free(NULL); /* no-op */
    kvs_close(db);
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++) {
        if (statuses[i] != KVS_INVALID_ARGUMENT)
            check_failed(__FILE__, __LINE__, "call %zu returned %d", i, (int)statuses[i]);
    }
    CHECK(message_ok);
    CHECK(cleared);
    CHECK_STATUS(set, KVS_OK);
    CHECK_STATUS(made, KVS_OK);
    CHECK_STATUS(no_key_out, KVS_INVALID_ARGUMENT);
    CHECK_STATUS(no_len_out, KVS_INVALID_ARGUMENT);
    CHECK(still);
}

/* Counts what an iterator hands out into `seen` (user keys) and *others; whether it ended
 * with KVS_NOT_FOUND and NULL / 0 outputs, and says so again when asked again. */
static int drain(kvs_iter *iter, int *seen, size_t *others, int *empty_key_seen)
{
    const uint8_t *key;
    size_t len;
    kvs_status status;
    memset(seen, 0, sizeof(int) * SCAN_USERS);
    *others = 0;
    *empty_key_seen = 0;
    while ((status = kvs_iter_next(iter, &key, &len)) == KVS_OK) {
        int n = user_number(key, len);
        if (n >= 0)
            seen[n]++;
        else if (len == 0 && key == NULL)
            (*empty_key_seen)++;
        else
            (*others)++;
    }
    if (status != KVS_NOT_FOUND || key != NULL || len != 0)
        return 0;
    const char *message = kvs_last_error();
    key = (const uint8_t *)&key;
    len = 5;
    return message != NULL && strstr(message, "no more keys") != NULL &&
           kvs_iter_next(iter, &key, &len) == KVS_NOT_FOUND && key == NULL && len == 0;
}

static void iterators(const char *engine, const char *name)
{
    kvs_db *db = open_engine_or_null(name, engine);
    CHECK(db != NULL);
    int *seen = calloc(SCAN_USERS, sizeof(int));
    CHECK(seen != NULL);
    size_t others = 0;
    int empty = 0, ok = fill_users(db);
    kvs_iter *all = NULL, *prefixed = NULL, *after_close = NULL;
    int all_ok = 1, prefix_ok = 1;
    ok = ok && kvs_iter_new(db, NULL, 0, NULL, 0, &all) == KVS_OK;
    ok = ok && drain(all, seen, &others, &empty);
    for (int i = 0; i < SCAN_USERS; i++)
        all_ok = all_ok && seen[i] >= 1;
    all_ok = all_ok && others >= SCAN_OTHERS && empty >= 1;
    kvs_iter_free(all);
    /* A prefix and a pattern: user:09N0. */
    ok = ok && kvs_iter_new(db, S("user:09"), S("*0"), &prefixed) == KVS_OK;
    ok = ok && drain(prefixed, seen, &others, &empty);
    for (int i = 0; i < SCAN_USERS; i++)
        prefix_ok = prefix_ok && ((i / 100 == 9 && i % 10 == 0) ? seen[i] >= 1 : seen[i] == 0);
    prefix_ok = prefix_ok && others == 0 && empty == 0;
    kvs_iter_free(prefixed);
    /* An iterator keeps the store open past kvs_close(); freeing it releases the directory. */
    ok = ok && kvs_iter_new(db, S("user:"), NULL, 0, &after_close) == KVS_OK;
    kvs_close(db);
    int drained = ok && drain(after_close, seen, &others, &empty);
    int closed_ok = drained;
    for (int i = 0; i < SCAN_USERS; i++)
        closed_ok = closed_ok && seen[i] >= 1;
    kvs_iter_free(after_close);
    free(seen);
    CHECK(ok);
    CHECK(all_ok);
    CHECK(prefix_ok);
    CHECK(closed_ok);
    db = open_engine_or_null(name, engine); /* released: opens at once */
    CHECK(db != NULL);
    kvs_close(db);
}

static void kvs_iterator_walks_every_key(void)
{
    iterators("kvs", "iter_kvs");
}

static void sled_iterator_walks_every_key(void)
{
    iterators("sled", "iter_sled");
}

/* ---- runner ------------------------------------------------------------------------- */

struct test {
    const char *name;
    void (*run)(void);
};

#define TEST(fn) {#fn, fn}

static const struct test tests[] = {
    TEST(version_is_the_workspace_version),
    TEST(set_then_get_returns_the_value),
    TEST(set_overwrites_the_previous_value),
    TEST(missing_key_is_not_found_with_null_value),
    TEST(remove_deletes_the_key),
    TEST(removing_a_missing_key_is_not_found),
    TEST(binary_keys_and_values_keep_nul_bytes),
    TEST(empty_keys_and_values_work_with_null_or_real_pointers),
    TEST(large_values_round_trip),
    TEST(oversized_key_is_invalid_argument),
    TEST(null_arguments_are_invalid_argument),
    TEST(data_survives_close_and_reopen),
    TEST(value_outlives_its_handle),
    TEST(open_of_a_new_directory_uses_the_kvs_engine),
    TEST(kvs_engine_round_trip),
    TEST(sled_engine_round_trip),
    TEST(other_engine_than_recorded_is_refused),
    TEST(unknown_engine_name_is_invalid_argument),
    TEST(path_that_is_a_regular_file_is_io_error),
    TEST(damaged_engine_record_is_corruption),
    TEST(second_open_of_an_open_store_is_io_error),
    TEST(lost_engine_file_is_judged_by_the_data),
    TEST(forked_child_gets_kvs_forked_and_the_parent_keeps_its_data),
    TEST(threads_share_one_handle),
    TEST(last_error_is_per_thread),
    TEST(compare_and_set_swaps_only_on_a_match),
    TEST(compare_and_set_checks_its_arguments),
    TEST(threads_increment_a_counter_with_compare_and_set),
    TEST(kvs_checkpoint_of_a_live_store),
    TEST(sled_checkpoint_of_a_live_store),
    TEST(checkpoint_refuses_a_non_empty_destination),
    TEST(options_init_fills_the_defaults),
    TEST(open_with_sync_always_and_small_files),
    TEST(read_only_open_serves_reads_and_refuses_writes),
    TEST(read_only_sled_is_refused),
    TEST(bad_options_are_invalid_argument),
    TEST(kvs_batch_applies_every_operation),
    TEST(sled_batch_applies_every_operation),
    TEST(batch_with_an_oversized_key_writes_nothing),
    TEST(batch_checks_its_arguments),
    TEST(batches_survive_kill_9_whole),
    TEST(kvs_deadlines_expire_keys),
    TEST(sled_deadlines_expire_keys),
    TEST(deadline_calls_check_their_arguments),
    TEST(kvs_get_many_reads_every_key),
    TEST(sled_get_many_reads_every_key),
    TEST(get_many_checks_its_arguments),
    TEST(kvs_scan_walks_every_key),
    TEST(sled_scan_walks_every_key),
    TEST(scan_checks_its_arguments),
    TEST(kvs_iterator_walks_every_key),
    TEST(sled_iterator_walks_every_key),
};

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s SCRATCH_DIR EXPECTED_VERSION\n", argv[0]);
        return 2;
    }
    scratch = argv[1];
    expected_version = argv[2];
    const char *filter = getenv("KVS_TEST"); /* KVS_TEST=name runs that test alone */
    size_t count = sizeof tests / sizeof tests[0];
    int passed = 0, failed = 0;
    for (size_t i = 0; i < count; i++) {
        if (filter && strcmp(filter, tests[i].name) != 0)
            continue;
        current_failed = 0;
        tests[i].run();
        if (current_failed) {
            failed++;
            printf("FAIL %s\n", tests[i].name);
        } else {
            passed++;
            printf("ok   %s\n", tests[i].name);
        }
        fflush(stdout);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
