/* The registered positional schemes: one line per scheme,
 *
 *   PG_POSMOD(name)
 *
 * which declares pg_posmod *pg_posmod_make_<name>(const pg_posmod_args *a)
 * (defined in the scheme's own nn/<name>.c) and registers it under the kind
 * string "<name>" (pg_posmod_lookup, pg_posmod_spec.kind). Included only by
 * nn/posmod.c, with PG_POSMOD defined there; no include guard on purpose. */
#ifdef PG_POSMOD
/* (the schemes of the next issue go here, e.g. PG_POSMOD(alibi)) */
#endif
