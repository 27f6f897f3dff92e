/* Compiled as C99 and, with `-x c++`, as C++ by tests/run.sh, with warnings as errors:
 * kvs.h must stand alone in both languages, and its declarations must link. */
#include <kvs.h>
#include <kvs.h> /* the include guard makes a second inclusion harmless */

#include <stdio.h>

int main(void)
{
    kvs_db *db = NULL;
    kvs_status status = KVS_OK;
    uint8_t *value = NULL;
    size_t value_len = 0;

    /* Every function with the exact types of docs/reference/c-api.md; the assignments check the signatures. */
    kvs_status (*open_fn)(const char *, kvs_db **) = kvs_open;
    kvs_status (*open_engine_fn)(const char *, const char *, kvs_db **) = kvs_open_engine;
    kvs_status (*set_fn)(kvs_db *, const uint8_t *, size_t, const uint8_t *, size_t) = kvs_set;
    kvs_status (*get_fn)(kvs_db *, const uint8_t *, size_t, uint8_t **, size_t *) = kvs_get;
    kvs_status (*remove_fn)(kvs_db *, const uint8_t *, size_t) = kvs_remove;
    void (*value_free_fn)(uint8_t *, size_t) = kvs_value_free;
    void (*close_fn)(kvs_db *) = kvs_close;
    const char *(*last_error_fn)(void) = kvs_last_error;
    const char *(*version_fn)(void) = kvs_version;
    (void)open_fn; (void)open_engine_fn; (void)set_fn; (void)get_fn; (void)remove_fn;
    (void)value_free_fn; (void)close_fn; (void)last_error_fn;
    kvs_status (*open_with_fn)(const char *, const char *, const kvs_options *, kvs_db **) =
        kvs_open_with;
    kvs_status (*options_init_fn)(kvs_options *) = kvs_options_init;
    (void)open_with_fn;

    /* The options struct, filled with its defaults. */
    kvs_options options;
    if (options_init_fn(&options) != KVS_OK || options.size != sizeof options ||
        options.sync != KVS_SYNC_OS || KVS_SYNC_ALWAYS == KVS_SYNC_OS)
        return 1;

    /* A NULL handle is an argument error, not a crash: safe to run without a store. */
    status = get_fn(db, NULL, 0, &value, &value_len);
    if (status != KVS_INVALID_ARGUMENT || value != NULL)
        return 1;
    kvs_close(NULL);
    kvs_value_free(NULL, 0);
    printf("kvs %s: header ok (%d)\n", version_fn(), (int)KVS_ERROR);
    return 0;
}
