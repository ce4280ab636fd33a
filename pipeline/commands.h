/* The commands of the milscreen binary; each takes its argv (argv[0] is the command name)
 * and returns the process exit code. */
#ifndef MS_COMMANDS_H
#define MS_COMMANDS_H

int ms_cmd_model(int argc, char **argv);
int ms_cmd_info(int argc, char **argv);
int ms_cmd_plot(int argc, char **argv);
int ms_cmd_train(int argc, char **argv);
int ms_cmd_score(int argc, char **argv);
int ms_cmd_bench(int argc, char **argv);
int ms_cmd_eval(int argc, char **argv);
int ms_cmd_render(int argc, char **argv);
int ms_cmd_synth(int argc, char **argv);
int ms_cmd_ingest(int argc, char **argv);
int ms_cmd_export(int argc, char **argv);

/* bench sections, one file each */
int ms_bench_cpu(int argc, char **argv);
int ms_bench_gpu(int argc, char **argv);
int ms_bench_io(int argc, char **argv);
int ms_bench_scaling(int argc, char **argv);

#endif
