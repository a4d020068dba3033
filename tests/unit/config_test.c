/* Unit tests of lib/config.c: flag and environment lookup, defaults, parsing errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"

static int teardown(void **state)
{
    (void)state;
    conf_init(0, NULL);
    unsetenv("REDIS_URL");
    unsetenv("WORKERS");
    unsetenv("VERBOSE");
    unsetenv("METRICS_PORT");
    return 0;
}

static void test_default_when_unset(void **state)
{
    (void)state;
    char *argv[] = {"prog", NULL};
    conf_init(1, argv);
    assert_string_equal(conf_get_str("redis-url", "127.0.0.1:6379"), "127.0.0.1:6379");
    assert_null(conf_get_str("redis-url", NULL));
    assert_false(conf_is_set("redis-url"));
    int64_t v = 0;
    assert_int_equal(conf_get_int("workers", 4, 1, 64, &v), 0);
    assert_int_equal(v, 4);
}

static void test_env_then_flag_precedence(void **state)
{
    (void)state;
    setenv("REDIS_URL", "redis://env:1", 1);
    char *argv0[] = {"prog", NULL};
    conf_init(1, argv0);
    assert_string_equal(conf_get_str("redis-url", "d"), "redis://env:1");
    assert_true(conf_is_set("redis-url"));

    char *argv1[] = {"prog", "--redis-url=redis://flag:2", NULL};
    conf_init(2, argv1);
    assert_string_equal(conf_get_str("redis-url", "d"), "redis://flag:2");

    char *argv2[] = {"prog", "--redis-url", "redis://flag:3", "--workers", "7", NULL};
    conf_init(5, argv2);
    assert_string_equal(conf_get_str("redis-url", "d"), "redis://flag:3");
    int64_t w = 0;
    assert_int_equal(conf_get_int("workers", 1, 1, 64, &w), 0);
    assert_int_equal(w, 7);
}

static void test_prefix_does_not_match(void **state)
{
    (void)state;
    char *argv[] = {"prog", "--redis-url-extra=x", "--redis=y", NULL};
    conf_init(3, argv);
    assert_null(conf_get_str("redis-url", NULL));
    assert_string_equal(conf_get_str("redis", NULL), "y");
}

static void test_int_errors_keep_default(void **state)
{
    (void)state;
    setenv("WORKERS", "12abc", 1);
    int64_t w = -1;
    assert_int_equal(conf_get_int("workers", 3, 1, 64, &w), CONF_E_INVALID);
    assert_int_equal(w, 3);
    setenv("WORKERS", "1000", 1);
    assert_int_equal(conf_get_int("workers", 3, 1, 64, &w), CONF_E_RANGE);
    assert_int_equal(w, 3);
    setenv("WORKERS", "0x10", 1);
    assert_int_equal(conf_get_int("workers", 3, 1, 64, &w), 0);
    assert_int_equal(w, 16);
    setenv("METRICS_PORT", "-5", 1);
    assert_int_equal(conf_get_int("metrics-port", 9100, 0, 65535, &w), CONF_E_RANGE);
    assert_string_equal(conf_strerror(CONF_E_RANGE), "value out of range");
}

static void test_bool_forms(void **state)
{
    (void)state;
    bool b = false;
    char *argv[] = {"prog", "--verbose", "--workers", "2", NULL};
    conf_init(4, argv);
    assert_int_equal(conf_get_bool("verbose", false, &b), 0);
    assert_true(b);
    char *argv2[] = {"prog", "--verbose=off", NULL};
    conf_init(2, argv2);
    assert_int_equal(conf_get_bool("verbose", true, &b), 0);
    assert_false(b);
    conf_init(0, NULL);
    setenv("VERBOSE", "maybe", 1);
    assert_int_equal(conf_get_bool("verbose", true, &b), CONF_E_INVALID);
    assert_true(b);
    setenv("VERBOSE", "YES", 1);
    assert_int_equal(conf_get_bool("verbose", false, &b), 0);
    assert_true(b);
}

static void test_double_dash_ends_flags(void **state)
{
    (void)state;
    char *argv[] = {"prog", "--", "--redis-url=x", NULL};
    conf_init(3, argv);
    assert_null(conf_get_str("redis-url", NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_default_when_unset, teardown),
        cmocka_unit_test_teardown(test_env_then_flag_precedence, teardown),
        cmocka_unit_test_teardown(test_prefix_does_not_match, teardown),
        cmocka_unit_test_teardown(test_int_errors_keep_default, teardown),
        cmocka_unit_test_teardown(test_bool_forms, teardown),
        cmocka_unit_test_teardown(test_double_dash_ends_flags, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
