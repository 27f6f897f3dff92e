/*
 * example.c: a complete program using libkvs.
 *
 *   usage: example DIR
 *
 * Opens (or creates) the store in DIR, counts how many times the program has run there,
 * stores a binary value, reads it back, and removes it again.
 *
 * Build and run (after kvs-ffi/install.sh PREFIX; see kvs-ffi/README.md):
 *   cc example.c -o example $(pkg-config --cflags --libs kvs) \
 *      -Wl,-rpath,"$(pkg-config --variable=libdir kvs)"
 *   ./example /tmp/kvs-example
 */
#include <kvs.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Prints what went wrong in the last kvs call and returns 1 (the exit status). */
static int fail(const char *what, kvs_status status)
{
    const char *message = kvs_last_error();
    fprintf(stderr, "%s failed (status %d): %s\n", what, (int)status,
            message ? message : "no message");
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    printf("libkvs %s\n", kvs_version());

    kvs_db *db = NULL;
    kvs_status status = kvs_open(argv[1], &db);
    if (status != KVS_OK)
        return fail("kvs_open", status);

    /* Read the run counter (a decimal string), or start from 0 when the key is missing. */
    static const char counter_key[] = "runs";
    unsigned long runs = 0;
    uint8_t *value = NULL;
    size_t value_len = 0;
    status = kvs_get(db, (const uint8_t *)counter_key, strlen(counter_key), &value, &value_len);
    if (status == KVS_OK) {
        char text[32] = {0};
        memcpy(text, value, value_len < sizeof text - 1 ? value_len : sizeof text - 1);
        runs = strtoul(text, NULL, 10);
        kvs_value_free(value, value_len);
    } else if (status != KVS_NOT_FOUND) {
        kvs_close(db);
        return fail("kvs_get", status);
    }

    char text[32];
    int text_len = snprintf(text, sizeof text, "%lu", runs + 1);
    status = kvs_set(db, (const uint8_t *)counter_key, strlen(counter_key), (const uint8_t *)text,
                     (size_t)text_len);
    if (status != KVS_OK) {
        kvs_close(db);
        return fail("kvs_set", status);
    }
    printf("this program has run %lu time(s) on %s\n", runs + 1, argv[1]);

    /* Keys and values are bytes: embedded NULs are kept. */
    static const uint8_t key[] = {'b', 'i', 'n', 0, 1};
    static const uint8_t blob[] = {0xde, 0xad, 0, 0xbe, 0xef};
    status = kvs_set(db, key, sizeof key, blob, sizeof blob);
    if (status == KVS_OK)
        status = kvs_get(db, key, sizeof key, &value, &value_len);
    if (status != KVS_OK) {
        kvs_close(db);
        return fail("binary set/get", status);
    }
    printf("binary value of %zu bytes read back %s\n", value_len,
           value_len == sizeof blob && memcmp(value, blob, sizeof blob) == 0 ? "intact" : "WRONG");
    kvs_value_free(value, value_len);

    status = kvs_remove(db, key, sizeof key);
    if (status != KVS_OK) {
        kvs_close(db);
        return fail("kvs_remove", status);
    }
    status = kvs_remove(db, key, sizeof key);
    printf("removing it twice: %s\n", status == KVS_NOT_FOUND ? "KVS_NOT_FOUND" : "unexpected");

    kvs_close(db);
    return 0;
}
