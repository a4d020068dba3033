/* Unit tests of the membership cache (svc-messaging/membership.c, the part without the GetChat
 * loader): chat_created makes a chat complete, members_added/removed first seen make it
 * incomplete (UNKNOWN: load it), last writer wins per (chat, user) on (produced_at_ms,
 * event_id) whatever the arrival order, a GetChat snapshot fills in users no event named (a
 * member added after the cache was filled: the send path's re-check) but never overrides an
 * event, and the cache is bounded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "membership.h"

static void event(membership *m, int kind, uint64_t chat, int64_t ts, uint64_t eid,
                  const char **users, size_t n)
{
    Chat__V1__ChatEvent ev = CHAT__V1__CHAT_EVENT__INIT;
    Chat__V1__Chat c = CHAT__V1__CHAT__INIT;
    Chat__V1__MembersChanged mc = CHAT__V1__MEMBERS_CHANGED__INIT;
    ev.chat_id = chat;
    ev.produced_at_ms = ts;
    ev.event_id = eid;
    ev.event_case = kind;
    c.chat_id = chat;
    c.member_ids = (char **)users;
    c.n_member_ids = n;
    mc.user_ids = (char **)users;
    mc.n_user_ids = n;
    if (kind == CHAT__V1__CHAT_EVENT__EVENT_CHAT_CREATED)
        ev.chat_created = &c;
    else if (kind == CHAT__V1__CHAT_EVENT__EVENT_MEMBERS_ADDED)
        ev.members_added = &mc;
    else
        ev.members_removed = &mc;
    membership_apply_event(m, &ev);
}

static void snapshot(membership *m, uint64_t chat, const char **users, size_t n)
{
    Chat__V1__Chat c = CHAT__V1__CHAT__INIT;
    c.chat_id = chat;
    c.member_ids = (char **)users;
    c.n_member_ids = n;
    membership_apply_snapshot(m, &c);
}

#define CREATED CHAT__V1__CHAT_EVENT__EVENT_CHAT_CREATED
#define ADDED CHAT__V1__CHAT_EVENT__EVENT_MEMBERS_ADDED
#define REMOVED CHAT__V1__CHAT_EVENT__EVENT_MEMBERS_REMOVED

static void test_created_then_changes(void **state)
{
    (void)state;
    membership *m;
    membership_new(&m, 100);
    const char *abc[] = {"carol", "alice", "bob"};
    assert_int_equal(membership_check(m, 7, "alice"), MEMBERSHIP_UNKNOWN);
    event(m, CREATED, 7, 1000, 1, abc, 3);
    assert_int_equal(membership_check(m, 7, "alice"), MEMBERSHIP_MEMBER);
    assert_int_equal(membership_check(m, 7, "carol"), MEMBERSHIP_MEMBER);
    assert_int_equal(membership_check(m, 7, "dave"), MEMBERSHIP_NOT_MEMBER);
    const char *dave[] = {"dave"}, *bob[] = {"bob"};
    event(m, ADDED, 7, 2000, 2, dave, 1);
    event(m, REMOVED, 7, 2001, 3, bob, 1);
    assert_int_equal(membership_check(m, 7, "dave"), MEMBERSHIP_MEMBER);
    assert_int_equal(membership_check(m, 7, "bob"), MEMBERSHIP_NOT_MEMBER);
    member_set *s = membership_get(m, 7);
    assert_non_null(s);
    assert_int_equal(s->n, 3);
    assert_string_equal(s->ids[0], "alice"); /* sorted */
    assert_string_equal(s->ids[1], "carol");
    assert_string_equal(s->ids[2], "dave");
    /* The set handed out is a snapshot: later events do not change it. */
    event(m, REMOVED, 7, 3000, 4, dave, 1);
    assert_true(member_set_has(s, "dave"));
    member_set_unref(s);
    assert_int_equal(membership_check(m, 7, "dave"), MEMBERSHIP_NOT_MEMBER);
    membership_free(m);
}

static void test_last_writer_wins_out_of_order(void **state)
{
    (void)state;
    membership *m;
    membership_new(&m, 100);
    const char *a[] = {"alice"}, *e[] = {"erin"};
    event(m, CREATED, 9, 1000, 1, a, 1);
    /* The removal (newer) arrives before the add (older, e.g. through the mirror). */
    event(m, REMOVED, 9, 3000, 30, e, 1);
    event(m, ADDED, 9, 2000, 20, e, 1);
    assert_int_equal(membership_check(m, 9, "erin"), MEMBERSHIP_NOT_MEMBER);
    /* Same millisecond: the higher event_id wins. */
    event(m, ADDED, 9, 3000, 31, e, 1);
    assert_int_equal(membership_check(m, 9, "erin"), MEMBERSHIP_MEMBER);
    event(m, REMOVED, 9, 3000, 29, e, 1);
    assert_int_equal(membership_check(m, 9, "erin"), MEMBERSHIP_MEMBER);
    membership_free(m);
}

static void test_incomplete_until_snapshot(void **state)
{
    (void)state;
    membership *m;
    membership_new(&m, 100);
    const char *f[] = {"frank"}, *g[] = {"gina"};
    /* A chat first seen through a change: unknown (load it), not "not a member". */
    event(m, ADDED, 11, 5000, 5, f, 1);
    event(m, REMOVED, 11, 5001, 6, g, 1);
    assert_int_equal(membership_check(m, 11, "frank"), MEMBERSHIP_UNKNOWN);
    assert_null(membership_get(m, 11));
    /* The snapshot is older than the removal of gina (svc-chats had not applied it): the event
     * wins; everyone else comes from the snapshot. */
    const char *snap[] = {"gina", "hugo"};
    snapshot(m, 11, snap, 2);
    assert_int_equal(membership_check(m, 11, "frank"), MEMBERSHIP_MEMBER);
    assert_int_equal(membership_check(m, 11, "hugo"), MEMBERSHIP_MEMBER);
    assert_int_equal(membership_check(m, 11, "gina"), MEMBERSHIP_NOT_MEMBER);
    membership_free(m);
}

static void test_snapshot_adds_a_member_the_log_has_not_shown_yet(void **state)
{
    (void)state;
    membership *m;
    membership_new(&m, 100);
    const char *ab[] = {"alice", "bob"};
    event(m, CREATED, 13, 1000, 1, ab, 2);
    assert_int_equal(membership_check(m, 13, "ivan"), MEMBERSHIP_NOT_MEMBER);
    /* AddMembers(ivan) returned on svc-chats; this cache has not consumed the event yet. The
     * send path re-checks with GetChat: */
    const char *abi[] = {"alice", "bob", "ivan"};
    snapshot(m, 13, abi, 3);
    assert_int_equal(membership_check(m, 13, "ivan"), MEMBERSHIP_MEMBER);
    /* The event arrives later and agrees. */
    const char *i[] = {"ivan"};
    event(m, ADDED, 13, 2000, 2, i, 1);
    assert_int_equal(membership_check(m, 13, "ivan"), MEMBERSHIP_MEMBER);
    /* A newer snapshot replaces an older one's verdicts (jane was only ever in a snapshot). */
    const char *abj[] = {"alice", "bob", "jane"};
    snapshot(m, 13, abj, 3);
    assert_int_equal(membership_check(m, 13, "jane"), MEMBERSHIP_MEMBER);
    snapshot(m, 13, ab, 2);
    assert_int_equal(membership_check(m, 13, "jane"), MEMBERSHIP_NOT_MEMBER);
    /* ...but never an event's: ivan stays, alice (named by chat_created) stays. */
    assert_int_equal(membership_check(m, 13, "ivan"), MEMBERSHIP_MEMBER);
    const char *none[] = {"zoe"};
    snapshot(m, 13, none, 1);
    assert_int_equal(membership_check(m, 13, "alice"), MEMBERSHIP_MEMBER);
    membership_free(m);
}

static void test_bounded(void **state)
{
    (void)state;
    membership *m;
    membership_new(&m, 16);
    const char *a[] = {"alice"};
    for (uint64_t chat = 1; chat <= 100; chat++)
        event(m, CREATED, chat, 1000, chat, a, 1);
    int known = 0;
    for (uint64_t chat = 1; chat <= 100; chat++)
        known += membership_check(m, chat, "alice") == MEMBERSHIP_MEMBER;
    assert_true(known >= 1 && known <= 16);
    assert_int_equal(membership_check(m, 100, "alice"), MEMBERSHIP_MEMBER); /* the newest */
    membership_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_created_then_changes),
        cmocka_unit_test(test_last_writer_wins_out_of_order),
        cmocka_unit_test(test_incomplete_until_snapshot),
        cmocka_unit_test(test_snapshot_adds_a_member_the_log_has_not_shown_yet),
        cmocka_unit_test(test_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
