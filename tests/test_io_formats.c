/* The parsers ingest feeds with other people's files, on buffers: the CSV parser (quotes,
 * line numbers, NUL bytes), the OME-XML scanner (channel names, entities, namespace prefixes,
 * TiffData mapping in any DimensionOrder, pixel units, what it must refuse), and manifests in
 * a dry run (milscreen's and LoadData's layouts, --classes). Then a few thousand seeded
 * mutations of each sample through all three, which must end in a status, never a crash: the
 * fuzz targets of issue 11 item 9 go further. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "io/csv.h"
#include "io/ingest.h"
#include "io/tiff.h"

static void test_csv(void)
{
    ms_csv_t t;
    const char *text = "\xef\xbb\xbf" "a,b ,\"c\"\r\n\n1,\"x, \"\"y\"\"\nz\",3\n4,5,6";
    CHECK_OK(ms_csv_parse(&t, "t.csv", text, strlen(text)));
    CHECK(t.hdr.nf == 3 && !strcmp(t.hdr.f[1], "b") && !strcmp(t.hdr.f[2], "c"), "header");
    CHECK(t.nrows == 2 && t.rows[0].line == 3 && t.rows[1].line == 5, "rows %d, lines %d %d",
          t.nrows, t.nrows > 0 ? t.rows[0].line : -1, t.nrows > 1 ? t.rows[1].line : -1);
    CHECK(t.nrows > 0 && !strcmp(t.rows[0].f[1], "x, \"y\"\nz"), "quoted field");
    CHECK(ms_csv_col(&t, "c") == 2 && ms_csv_col(&t, "d") == -1, "columns");
    ms_csv_free(&t);
    const char *bad[] = {"a,b\n1\n", "a\n\"open\n", "a\n\"x\"y\n", "", "\n\n"};
    const char *why[] = {"t.csv:2: 1 fields", "t.csv:2: a quoted field is not closed",
                         "t.csv:2: text after a closing quote", "t.csv is empty", "empty"};
    for (int j = 0; j < 5; j++) {
        CHECK(ms_csv_parse(&t, "t.csv", bad[j], strlen(bad[j])) == MS_EFORMAT &&
                  strstr(ms_error_message(), why[j]),
              "case %d: %s", j, ms_error_message());
        CHECK(t.nrows == 0 && !t.hdr.f, "left empty");
    }
    const char nul[] = "a,b\n1,2\n3,\0\n";
    CHECK(ms_csv_parse(&t, "t.csv", nul, sizeof nul - 1) == MS_EFORMAT &&
              strstr(ms_error_message(), "t.csv:3: a NUL byte"),
          "NUL: %s", ms_error_message());
}

static const char *ome_tifffile =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><OME xmlns=\"http://www.openmicroscopy.org/Sc"
    "hemas/OME/2016-06\" Creator=\"tifffile.py 2023.2.3\"><Image ID=\"Image:0\" Name=\"Image"
    "0\"><Pixels ID=\"Pixels:0\" DimensionOrder=\"XYCZT\" Type=\"uint16\" SizeX=\"10\" SizeY="
    "\"12\" SizeC=\"3\" SizeZ=\"1\" SizeT=\"1\" PhysicalSizeX=\"0.65\" PhysicalSizeY=\"0.7\">"
    "<Channel ID=\"Channel:0:0\" SamplesPerPixel=\"1\" Name=\"DAPI\"><LightPath/></Channel>"
    "<Channel ID=\"Channel:0:1\" SamplesPerPixel=\"1\" Name=\"GFP &amp; &#956;\"><LightPath/>"
    "</Channel><Channel ID=\"Channel:0:2\" SamplesPerPixel=\"1\" Name=\"RFP\"><LightPath/>"
    "</Channel><TiffData IFD=\"0\" PlaneCount=\"3\"/></Pixels></Image></OME>";

static void test_ome(void)
{
    ms_tiff_ome_t o;
    ms_tiff_parse_ome(ome_tifffile, "x.ome.tif", &o);
    CHECK(o.present && o.nchannels == 3 && !o.problem[0], "tifffile's OME: %s", o.problem);
    CHECK(!strcmp(o.name[0], "DAPI") && !strcmp(o.name[1], "GFP & \xce\xbc") &&
              !strcmp(o.name[2], "RFP"), "names, entities decoded: '%s'", o.name[1]);
    CHECK(o.page[0] == 0 && o.page[1] == 1 && o.page[2] == 2, "pages");
    CHECK(check_close(o.pixel_size[0], 0.7, 1e-12) && check_close(o.pixel_size[1], 0.65, 1e-12),
          "pixel size (y, x) %g %g", o.pixel_size[0], o.pixel_size[1]);
    /* namespace prefixes, channels in reverse IFDs, Z-first order with one plane, nm */
    const char *bf =
        "<ome:OME xmlns:ome='x'><ome:Image ID='Image:0'><ome:Pixels DimensionOrder='XYZTC' "
        "SizeC='2' SizeZ='1' SizeT='1' PhysicalSizeX='650' PhysicalSizeXUnit='nm'>"
        "<ome:Channel Name='a'/><ome:Channel Name='b'/>"
        "<ome:TiffData FirstC='0' IFD='1'/><ome:TiffData FirstC='1' IFD='0'/>"
        "</ome:Pixels></ome:Image></ome:OME>";
    ms_tiff_parse_ome(bf, "x.tif", &o);
    CHECK(o.present && o.nchannels == 2 && o.page[0] == 1 && o.page[1] == 0 && !o.problem[0],
          "TiffData IFD mapping: %d %d %s", o.page[0], o.page[1], o.problem);
    CHECK(check_close(o.pixel_size[0], 0.65, 1e-12) && check_close(o.pixel_size[1], 0.65, 1e-12),
          "650 nm, square: %g %g", o.pixel_size[0], o.pixel_size[1]);
    /* a z-stack: channel c at plane c * SizeZ in XYZCT; and it is a problem for channels */
    const char *z = "<OME><Image><Pixels DimensionOrder='XYZCT' SizeC='2' SizeZ='3' SizeT='1'>"
                    "<Channel/><Channel/></Pixels></Image></OME>";
    ms_tiff_parse_ome(z, "x.tif", &o);
    CHECK(o.page[0] == 0 && o.page[1] == 3 && strstr(o.problem, "SizeZ=3"), "z-stack: %d %s",
          o.page[1], o.problem);
    const char *foreign = "<OME><Image><Pixels SizeC='1'><Channel Name='a'/><TiffData IFD='0'>"
                          "<UUID FileName='other.ome.tif'>urn:uuid:1</UUID></TiffData></Pixels>"
                          "</Image></OME>";
    ms_tiff_parse_ome(foreign, "x.ome.tif", &o);
    CHECK(strstr(o.problem, "another file (other.ome.tif)"), "foreign file: %s", o.problem);
    ms_tiff_parse_ome(foreign, "other.ome.tif", &o);
    CHECK(!o.problem[0] && o.page[0] == 0, "its own file name: %s", o.problem);
    const char *two = "<OME><Image><Pixels SizeC='1'/></Image><Image><Pixels SizeC='1'/></Image>"
                      "</OME>";
    ms_tiff_parse_ome(two, "x.tif", &o);
    CHECK(o.nimages == 2 && strstr(o.problem, "2 OME images"), "series: %s", o.problem);
    ms_tiff_parse_ome("<OME><BinaryOnly MetadataFile='a.companion.ome' UUID='u'/></OME>", "x",
                      &o);
    CHECK(!o.present && strstr(o.pixel_note, "companion"), "BinaryOnly: %s", o.pixel_note);
    ms_tiff_parse_ome("ImageJ=1.53\nimages=3\n", "x", &o);
    CHECK(!o.present && !o.problem[0], "not OME");
    const char *unit = "<OME><Image><Pixels SizeC='1' PhysicalSizeX='2' PhysicalSizeXUnit='pixel'"
                       "/></Image></OME>";
    ms_tiff_parse_ome(unit, "x", &o);
    CHECK(o.pixel_size[0] == 0 && strstr(o.pixel_note, "'pixel' is not a length"), "unit: %s",
          o.pixel_note);
}

static void test_manifest_dry_run(void)
{
    ms_ingest_opts_t o = ms_ingest_defaults();
    o.dry_run = 1;
    o.log = NULL;
    const char *m = "plate,well,label,file_a,Metadata_Compound\nP,A01,hit,a.tif,x\n"
                    "P,A02,ctrl,b.tif#1,y\n";
    CHECK_OK(ms_ingest_manifest_text("m.csv", m, strlen(m), NULL, &o));
    o.classes = "ctrl,hit";
    CHECK_OK(ms_ingest_manifest_text("m.csv", m, strlen(m), NULL, &o));
    o.classes = "hit,ctrl,hit";
    CHECK(ms_ingest_manifest_text("m.csv", m, strlen(m), NULL, &o) == MS_EARG &&
              strstr(ms_error_message(), "'hit' twice"), "%s", ms_error_message());
    o.classes = "ctrl";
    CHECK(ms_ingest_manifest_text("m.csv", m, strlen(m), NULL, &o) == MS_EFORMAT &&
              strstr(ms_error_message(), "m.csv:2: label 'hit'"), "%s", ms_error_message());
    o.classes = NULL;
    const char *ld = "FileName_DNA,PathName_DNA,Metadata_Plate,Metadata_Well,Metadata_Site\n"
                     "a.tif,imgs,P,A01,1\na.tif,imgs,P,A01,1\n";
    CHECK(ms_ingest_manifest_text("ld.csv", ld, strlen(ld), NULL, &o) == MS_EFORMAT &&
              strstr(ms_error_message(), "ld.csv:3: image_id 'P_A01_s1' is also line 2's"),
          "duplicate ids: %s", ms_error_message());
    const char *both = "plate,well,file_a,FileName_b,PathName_b\nP,A,x,y,z\n";
    CHECK(ms_ingest_manifest_text("b.csv", both, strlen(both), NULL, &o) == MS_EFORMAT &&
              strstr(ms_error_message(), "one layout per manifest"), "%s", ms_error_message());
    const char *nopath = "FileName_b,Metadata_Plate,Metadata_Well\ny,P,A\n";
    CHECK(ms_ingest_manifest_text("n.csv", nopath, strlen(nopath), NULL, &o) == MS_EFORMAT &&
              strstr(ms_error_message(), "FileName_b has no PathName_b"), "%s",
          ms_error_message());
}

/* Seeded mutations (byte flips, insertions of syntax characters, truncations) of a sample
 * through a parser: each must return (the harness checks nothing else: a crash or a
 * sanitizer report is the failure). */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)rng_state;
}

static size_t mutate(char *buf, size_t n, size_t cap)
{
    static const char syn[] = "<>\"'=/&#;:,\n\r ";
    int k = 1 + rnd() % 4;
    for (int j = 0; j < k && n; j++) {
        size_t at = rnd() % n;
        switch (rnd() % 4) {
        case 0: buf[at] = (char)rnd(); break;
        case 1: buf[at] = syn[rnd() % (sizeof syn - 1)]; break;
        case 2: n = at; break;
        default:
            if (n + 1 < cap) {
                memmove(buf + at + 1, buf + at, n - at);
                buf[at] = syn[rnd() % (sizeof syn - 1)];
                n++;
            }
        }
    }
    return n;
}

static void test_mutations(void)
{
    enum { ROUNDS = 3000, CAP = 4096 };
    char *buf = malloc(CAP + 1);
    const char *man = "plate,well,site,labels,file_a,file,Metadata_x\nP,A01,1,a;b,x.tif#2,y.tif,"
                      "\"q,\"\"r\"\"\"\nP,A02,2,,x.tif,y.tif,s\n";
    const char *ld = "FileName_DNA,PathName_DNA,Frame_DNA,Metadata_Plate,Metadata_Well,"
                     "Metadata_Site,Metadata_moa\nd.tif,img,0,P,A01,1,m\n";
    const char *samples[3] = {ome_tifffile, man, ld};
    ms_ingest_opts_t o = ms_ingest_defaults();
    o.dry_run = 1;
    o.log = NULL;
    int parsed = 0;
    for (int s = 0; s < 3; s++)
        for (int r = 0; r < ROUNDS; r++) {
            size_t n = strlen(samples[s]);
            memcpy(buf, samples[s], n);
            n = mutate(buf, n, CAP);
            buf[n] = 0;
            if (s == 0) {
                ms_tiff_ome_t om;
                ms_tiff_parse_ome(buf, "x.ome.tif", &om);
                parsed += om.present;
                CHECK(om.nchannels >= 0 && om.nchannels <= MS_TIFF_MAX_CHANNELS, "channels");
            } else {
                ms_csv_t t;
                if (ms_csv_parse(&t, "f.csv", buf, n) == MS_OK) {
                    parsed++;
                    ms_csv_free(&t);
                }
                (void)ms_ingest_manifest_text("f.csv", buf, n, NULL, &o);
            }
        }
    CHECK(parsed > ROUNDS / 2, "most mutations still parse (%d): the mutations reach deep",
          parsed);
    free(buf);
}

int main(void)
{
    test_csv();
    test_ome();
    test_manifest_dry_run();
    test_mutations();
    return check_summary();
}
