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
    kvs_status (*get_many_fn)(kvs_db *, size_t, const uint8_t *const *, const size_t *,
                              uint8_t **, size_t *, int *) = kvs_get_many;
    kvs_status (*batch_new_fn)(kvs_batch **) = kvs_batch_new;
    kvs_status (*batch_set_fn)(kvs_batch *, const uint8_t *, size_t, const uint8_t *, size_t) =
        kvs_batch_set;
    kvs_status (*batch_set_with_deadline_fn)(kvs_batch *, const uint8_t *, size_t,
                                             const uint8_t *, size_t, uint64_t) =
        kvs_batch_set_with_deadline;
    kvs_status (*batch_remove_fn)(kvs_batch *, const uint8_t *, size_t) = kvs_batch_remove;
    kvs_status (*batch_len_fn)(const kvs_batch *, size_t *) = kvs_batch_len;
    kvs_status (*batch_clear_fn)(kvs_batch *) = kvs_batch_clear;
    void (*batch_free_fn)(kvs_batch *) = kvs_batch_free;
    kvs_status (*apply_batch_fn)(kvs_db *, const kvs_batch *) = kvs_apply_batch;
    uint64_t (*now_millis_fn)(void) = kvs_now_millis;
    kvs_status (*set_with_deadline_fn)(kvs_db *, const uint8_t *, size_t, const uint8_t *,
                                       size_t, uint64_t) = kvs_set_with_deadline;
    kvs_status (*expire_at_fn)(kvs_db *, const uint8_t *, size_t, uint64_t, int *) =
        kvs_expire_at;
    kvs_status (*persist_fn)(kvs_db *, const uint8_t *, size_t, int *) = kvs_persist;
    kvs_status (*expiry_fn)(kvs_db *, const uint8_t *, size_t, int *, uint64_t *) = kvs_expiry;
    kvs_status (*scan_fn)(kvs_db *, uint64_t, size_t, const uint8_t *, size_t, const uint8_t *,
                          size_t, kvs_scan_page **) = kvs_scan;
    void (*scan_page_free_fn)(kvs_scan_page *) = kvs_scan_page_free;
    kvs_status (*iter_new_fn)(kvs_db *, const uint8_t *, size_t, const uint8_t *, size_t,
                              kvs_iter **) = kvs_iter_new;
    kvs_status (*iter_next_fn)(kvs_iter *, const uint8_t **, size_t *) = kvs_iter_next;
    void (*iter_free_fn)(kvs_iter *) = kvs_iter_free;
    (void)get_many_fn; (void)batch_set_fn; (void)batch_set_with_deadline_fn;
    (void)batch_remove_fn; (void)batch_len_fn; (void)batch_clear_fn; (void)apply_batch_fn;
    (void)set_with_deadline_fn; (void)expire_at_fn; (void)persist_fn; (void)expiry_fn;
    (void)scan_fn; (void)iter_new_fn; (void)iter_next_fn;

    /* A batch needs no store; a page is a plain struct. */
    kvs_batch *batch = NULL;
    size_t ops = 1;
    if (batch_new_fn(&batch) != KVS_OK || batch_len_fn(batch, &ops) != KVS_OK || ops != 0)
        return 1;
    batch_free_fn(batch);
    kvs_scan_page page = {0, NULL, 0};
    (void)page;
    scan_page_free_fn(NULL);
    iter_free_fn(NULL);
    if (now_millis_fn() == 0)
        return 1;

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
