// `naslora doctor`: what the engine runs on, and loud warnings where it will be slow.
import type { Command } from 'commander';
import { engineInfo } from '../../engine/index.js';

export function registerDoctor(program: Command): void {
  program
    .command('doctor')
    .description('libtorch version, BLAS in use, threads, devices; warns about slow set-ups')
    .option('--json', 'print JSON only')
    .action((o: { json?: boolean }) => {
      const i = engineInfo();
      const warnings: string[] = [];
      if (i.blas.kind === 'reference' || i.blas.kind === 'unknown') {
        warnings.push(`BLAS is ${i.blas.kind} (${i.blas.library || 'none mapped'}): matrix products will be ~30x slower. ` +
          'Install OpenBLAS: apt-get install libopenblas0-pthread');
      }
      if (i.debugBuild) warnings.push(`libtorch is a ${i.buildType} build: expect it to be many times slower than a release build`);
      if (!i.mallocTuned) warnings.push('glibc malloc is not tuned (NASLORA_MALLOC_TUNE=0 or MALLOC_*_ set): training steps may be slower');
      if (o.json) {
        console.log(JSON.stringify({ ...i, warnings }, null, 2));
        return;
      }
      console.log(`libtorch      ${i.libtorch} (${i.buildType})`);
      console.log(`BLAS          ${i.blas.kind}  ${i.blas.library}`);
      console.log(`threads       ${i.threads} intra-op${i.blasThreads > 0 ? `, ${i.blasThreads} OpenBLAS (${i.blasFollowsIntraOp ? 'follows intra-op' : 'OPENBLAS_NUM_THREADS'})` : ''}`);
      console.log(`devices       ${i.devices.join(', ')}  (CUDA: ${i.cuda.build ? `CUDA build, ${i.cuda.devices} device(s) visible` : 'none, a CPU build of libtorch'})`);
      console.log(`attention     ${i.sdpa ? 'scaled_dot_product_attention (fused kernels)' : 'explicit (this libtorch has no scaled_dot_product_attention)'}`);
      console.log(`malloc tuned  ${i.mallocTuned ? 'yes' : 'no'}`);
      for (const w of warnings) console.log(`\n!!! WARNING: ${w}`);
    });
}
