/* Criterion's main initialises libgit2 (for its assertion diffs), and on Debian
 * libgit2's mbedtls backend then parses every certificate of the system's CA
 * bundle: some 50 million instructions in each test's process, 78% of what it ran
 * besides its test (callgrind of a worker), and 0.6 s of the 1.9 s a test took to
 * start under valgrind (make valgrind-all starts over a thousand). The tests
 * never open a TLS connection, so the test binary answers that one call with an
 * error of its own (libgit2 then goes on without certificates); the Makefile
 * exports the symbol so that it takes the library's place. Elsewhere (another
 * TLS backend, or none) nothing calls it. */
struct mbedtls_x509_crt;
int mbedtls_x509_crt_parse_file(struct mbedtls_x509_crt *chain, const char *path);

int mbedtls_x509_crt_parse_file(struct mbedtls_x509_crt *chain, const char *path)
{
    (void)chain, (void)path;
    return -0x2900; /* MBEDTLS_ERR_X509_BAD_INPUT_DATA */
}
