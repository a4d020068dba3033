/* Unit tests of svc-chats/validate.c: the input rules of the chat.v1 conventions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "validate.h"

static bool utf8(const char *s)
{
    return validate_utf8(s, strlen(s));
}

static void test_utf8(void **state)
{
    (void)state;
    assert_true(utf8(""));
    assert_true(utf8("plain ascii"));
    assert_true(utf8("caf\xc3\xa9"));           /* U+00E9 */
    assert_true(utf8("\xe2\x82\xac"));          /* U+20AC */
    assert_true(utf8("\xf0\x9f\x98\x80"));      /* U+1F600 */
    assert_true(utf8("\xf4\x8f\xbf\xbf"));      /* U+10FFFF */
    assert_false(utf8("\xc0\xaf"));             /* overlong '/' */
    assert_false(utf8("\xe0\x80\xaf"));         /* overlong, 3 bytes */
    assert_false(utf8("\xf0\x80\x80\xaf"));     /* overlong, 4 bytes */
    assert_false(utf8("\xed\xa0\x80"));         /* U+D800, a surrogate */
    assert_false(utf8("\xed\xbf\xbf"));         /* U+DFFF */
    assert_false(utf8("\xf4\x90\x80\x80"));     /* U+110000 */
    assert_false(utf8("\xf8\x88\x80\x80\x80")); /* 5-byte form */
    assert_false(utf8("\x80"));                 /* lone continuation */
    assert_false(utf8("\xc3"));                 /* truncated */
    assert_false(utf8("\xe2\x82"));             /* truncated */
    assert_false(utf8("\xc3\x28"));             /* bad continuation */
    assert_false(utf8("\xff"));
    /* An embedded NUL is refused (the length says there is more). */
    assert_false(validate_utf8("a\0b", 3));
    /* Only |len| bytes are read. */
    assert_true(validate_utf8("ok\xff", 2));
}

static void test_ids(void **state)
{
    (void)state;
    char max_user[VALIDATE_USER_ID_MAX + 2];
    memset(max_user, 'u', sizeof(max_user));
    max_user[VALIDATE_USER_ID_MAX] = '\0';
    assert_true(validate_user_id(max_user));
    max_user[VALIDATE_USER_ID_MAX] = 'u';
    max_user[VALIDATE_USER_ID_MAX + 1] = '\0';
    assert_false(validate_user_id(max_user));
    assert_true(validate_user_id("service:svc-messaging"));
    assert_true(validate_user_id("!~"));
    assert_false(validate_user_id(""));
    assert_false(validate_user_id(NULL));
    assert_false(validate_user_id("has space"));
    assert_false(validate_user_id("tab\t"));
    assert_false(validate_user_id("caf\xc3\xa9"));

    assert_true(validate_device_id("phone-1.A_b"));
    assert_false(validate_device_id("phone 1"));
    assert_false(validate_device_id("phone:1"));
    assert_false(validate_device_id(""));
    assert_false(validate_device_id(NULL));
    char dev[VALIDATE_DEVICE_ID_MAX + 2];
    memset(dev, 'd', sizeof(dev));
    dev[VALIDATE_DEVICE_ID_MAX] = '\0';
    assert_true(validate_device_id(dev));
    dev[VALIDATE_DEVICE_ID_MAX] = 'd';
    dev[VALIDATE_DEVICE_ID_MAX + 1] = '\0';
    assert_false(validate_device_id(dev));

    assert_true(validate_token_id("req-1:~!"));
    assert_false(validate_token_id("two words"));
    char tid[VALIDATE_REQUEST_ID_MAX + 2];
    memset(tid, 't', sizeof(tid));
    tid[VALIDATE_REQUEST_ID_MAX] = '\0';
    assert_true(validate_token_id(tid));
    tid[VALIDATE_REQUEST_ID_MAX] = 't';
    tid[VALIDATE_REQUEST_ID_MAX + 1] = '\0';
    assert_false(validate_token_id(tid));
}

static void test_body(void **state)
{
    (void)state;
    static char body[VALIDATE_BODY_MAX + 2];
    assert_false(validate_body(""));
    assert_false(validate_body(NULL));
    assert_true(validate_body("hi"));
    assert_false(validate_body("bad \xc0\xaf"));
    memset(body, 'b', sizeof(body));
    body[VALIDATE_BODY_MAX] = '\0';
    assert_true(validate_body(body));
    body[VALIDATE_BODY_MAX] = 'b';
    body[VALIDATE_BODY_MAX + 1] = '\0';
    assert_false(validate_body(body));
    /* The limit is bytes, not characters: 2048 two-byte characters fit, one more does not. */
    for (int i = 0; i < VALIDATE_BODY_MAX; i += 2) {
        body[i] = '\xc3';
        body[i + 1] = '\xa9';
    }
    body[VALIDATE_BODY_MAX] = '\0';
    assert_true(validate_body(body));
    body[VALIDATE_BODY_MAX] = '\xc3';
    body[VALIDATE_BODY_MAX + 1] = '\0';
    assert_false(validate_body(body));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
