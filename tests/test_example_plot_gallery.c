/* Smoke test of examples/plot_gallery.c: the four figures of docs/plotting.md
 * are written, decode with pg_png_read, have the expected sizes, and stay
 * small (compressed). */
#define PG_EXAMPLE_NO_MAIN
#include "../examples/plot_gallery.c"

#include <stdlib.h>
#include <unistd.h>

#include "testutil.h"

Test(example_plot_gallery, writes_four_small_figures)
{
    char dir[] = "/tmp/pg_gallery_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    cr_assert_eq(plot_gallery_run(dir), 0, "%s", pg_last_error());
    const char *names[4] = {"plot_heatmap.png", "plot_lines.png", "plot_scatter.png", "plot_font.png"};
    const int64_t widths[4] = {0, 640, 480, 600}; /* 0: the heatmap's own layout, at least 2 x 400 */
    for (int i = 0; i < 4; i++) {
        char path[256];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        struct stat st;
        cr_assert_eq(stat(path, &st), 0, "%s is missing", path);
        cr_assert_lt(st.st_size, 64 * 1024, "%s is %lld bytes", names[i], (long long)st.st_size);
        int64_t w, h;
        int ch;
        uint8_t *px;
        cr_assert_eq(pg_png_read(path, &w, &h, &ch, &px), 0, "%s: %s", path, pg_last_error());
        cr_assert(widths[i] ? w == widths[i] : w >= 800, "%s is %lld wide", names[i], (long long)w);
        free(px);
        remove(path);
    }
    rmdir(dir);
}
