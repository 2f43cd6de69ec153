/* The registered positional schemes: one line per scheme,
 *
 *   PG_POSMOD(name)
 *
 * which declares pg_posmod *pg_posmod_make_<name>(const pg_posmod_args *a)
 * (defined in the scheme's own nn/<name>.c) and registers it under the kind
 * string "<name>" (pg_posmod_lookup, pg_posmod_spec.kind). Included only by
 * nn/posmod.c, with PG_POSMOD defined there; no include guard on purpose. */
#ifdef PG_POSMOD
PG_POSMOD(sinusoidal)
PG_POSMOD(learned)
PG_POSMOD(continuous)
PG_POSMOD(rotary)
PG_POSMOD(xpos)
PG_POSMOD(alibi)
PG_POSMOD(dpb)
PG_POSMOD(xl)
PG_POSMOD(t5)
PG_POSMOD(abs1d)
PG_POSMOD(rel1d)
PG_POSMOD(rel2d)
#endif
