/*
 * get.c: the C half of the kvs_get benchmark: kvs_get (and kvs_value_free) of a 100-byte
 * value, on the same store shape and loop as benches/get.rs.
 *
 *   usage: get SCRATCH_DIR        (run both halves with: bash kvs-ffi/benches/run.sh)
 */
#include <kvs.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

#define KEYS 1000
#define VALUE_LEN 100
#define GETS 500000
#define ROUNDS 5

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s SCRATCH_DIR\n", argv[0]);
        return 2;
    }
    kvs_db *db = NULL;
    if (kvs_open_engine(argv[1], "kvs", &db) != KVS_OK) {
        fprintf(stderr, "kvs_open_engine: %s\n", kvs_last_error());
        return 1;
    }
    static char keys[KEYS][16];
    uint8_t value[VALUE_LEN];
    memset(value, 'v', sizeof value);
    for (int i = 0; i < KEYS; i++) {
        snprintf(keys[i], sizeof keys[i], "key%06d", i);
        if (kvs_set(db, (const uint8_t *)keys[i], 9, value, sizeof value) != KVS_OK) {
            fprintf(stderr, "kvs_set: %s\n", kvs_last_error());
            return 1;
        }
    }

    double best = 1e300;
    for (int round = 0; round < ROUNDS; round++) {
        double start = now_ns();
        for (int i = 0; i < GETS; i++) {
            uint8_t *got = NULL;
            size_t got_len = 0;
            if (kvs_get(db, (const uint8_t *)keys[i % KEYS], 9, &got, &got_len) != KVS_OK ||
                got_len != VALUE_LEN) {
                fprintf(stderr, "kvs_get: wrong result\n");
                return 1;
            }
            kvs_value_free(got, got_len);
        }
        double ns = (now_ns() - start) / GETS;
        if (ns < best)
            best = ns;
    }
    printf("C kvs_get + kvs_value_free (kvs engine, %d-byte value, %d keys): %.0f ns/get "
           "(best of %d x %d)\n",
           VALUE_LEN, KEYS, best, ROUNDS, GETS);
    kvs_close(db);
    return 0;
}
