/* milscreen bench --cpu (placeholder until the oneDNN backend lands). */
#include "pipeline/cli.h"
#include "pipeline/commands.h"

int ms_bench_cpu(int argc, char **argv)
{
    return ms_cli_usage_error("bench", "--cpu is not built yet");
}
