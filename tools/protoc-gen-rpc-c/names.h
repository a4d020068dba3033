/*
 * names.h: C identifiers derived from .proto names, exactly as protoc-c 1.4
 * derives them, so the stubs can name protoc-c's types and descriptors and
 * their own identifiers read the same way.
 *
 *   CamelToLower  "UnaryCall" -> "unary_call", "RPCStats" -> "rpcstats",
 *                 "V1alpha" -> "v1alpha" (a capital starts a word only after
 *                 a non-capital)
 *   ToCamel       "test_service" -> "TestService", "v1alpha" -> "V1alpha"
 *   full names    pieces joined with "__": "grpc.testing.SimpleRequest" ->
 *                 "grpc__testing__simple_request" / "Grpc__Testing__SimpleRequest"
 *
 * A file's (pb_c_file).c_package option replaces its package in full names.
 * Every function returns a new string the caller frees.
 */
#ifndef PGRC_NAMES_H
#define PGRC_NAMES_H

char *names_camel_to_lower(const char *name);
char *names_camel_to_upper(const char *name);
char *names_to_camel(const char *name);

/* |full_name| has no leading dot; |package| is the package of the file that defines it ("" or
 * NULL for none) and |c_package| that file's c_package option or NULL. */
char *names_full_to_lower(const char *full_name, const char *package, const char *c_package);
char *names_full_to_upper(const char *full_name, const char *package, const char *c_package);
char *names_full_to_c(const char *full_name, const char *package, const char *c_package);

/* "grpc/testing/test.proto" -> "grpc_testing_test_proto": every byte that is not a letter or
 * digit becomes '_' (and a leading digit gets a '_' in front). */
char *names_file_ident(const char *path);

/* "grpc/testing/test.proto" -> "grpc/testing/test" (protoc-c's StripProto). */
char *names_strip_proto(const char *path);

/* A struct member name for |lower|: a C keyword (or "user_data", which the server table uses
 * itself) gets a trailing '_'. */
char *names_member(const char *lower);

#endif /* PGRC_NAMES_H */
