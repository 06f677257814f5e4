/**
 * Every default value of svd-train, in one place.
 *
 * `resolveConfig()` (config/resolve.ts) fills a run config from `DEFAULTS`; the dataset code (cifar10-*.ts)
 * reads the download URL, checksums and cache location from here. Change a default here and
 * nowhere else.
 */

/** ResNet variants the model builder knows (CIFAR ResNet-6n+2 and the ImageNet-style ResNet-18). */
export const MODELS = ['resnet20', 'resnet32', 'resnet44', 'resnet56', 'resnet110', 'resnet18'] as const;
/**
 * The depth argument of the model builder (`buildResNet` in layers), one per entry of `MODELS`:
 * a CIFAR ResNet-(6n+2) depth, or `'resnet18'` for the CIFAR variant of ResNet-18.
 */
export const RESNET_DEPTHS = [20, 32, 44, 56, 110, 'resnet18'] as const;
export type ResNetDepth = (typeof RESNET_DEPTHS)[number];
/** How a conv weight is split into a matrix before the SVD (layers' svd-init.ts). */
export const DECOMPOSITIONS = ['channel', 'spatial'] as const;
export type Decomposition = (typeof DECOMPOSITIONS)[number];
export const FORWARD_MODES = ['auto', 'reconstruct', 'factored'] as const;
/** Singular-value sparsity penalty: Hoyer ‖s‖₁/‖s‖₂, L1, Hoyer-square, or none. */
export const SPARSITIES = ['hoyer', 'l1', 'hoyer2', 'none'] as const;
export type SparsityKind = (typeof SPARSITIES)[number];
export const OPTIMIZERS = ['sgd', 'adam'] as const;
export const SCHEDULES = ['onecycle', 'multistep', 'cosine', 'constant'] as const;
export const STALL_ACTIONS = ['drop', 'abort'] as const;
export const DECAY_ON = ['all', 'factors'] as const;
/** Compute engines; 'native' is oneDNN on the wasm backend (@svd-train/native). `auto` tries them in this order. */
export const BACKENDS = ['auto', 'tensorflow', 'native', 'wasm', 'cpu'] as const;
export type BackendChoice = (typeof BACKENDS)[number];

/**
 * Default run configuration (camelCase; the CLI flag of each field is its kebab-case name).
 * Typed loosely here on purpose: config/schema.ts checks `DEFAULTS` against `RunConfig` at compile time.
 */
/** setTimeout's longest delay (2³¹ − 1 ms, about 24.8 days): Node fires a longer one after 1 ms. */
export const MAX_TIMER_MS = 2_147_483_647;

export const DEFAULTS = Object.freeze({
  // Model
  model: 'resnet20',
  svd: true,
  decomposition: 'channel',
  forward: 'auto',
  // Per-layer ranks of SVD layers by PyTorch module name ('layers.3.conv1': 5), e.g. of a pruned
  // checkpoint being fine-tuned; layers not listed get full rank. null = every layer full rank.
  ranks: null as Record<string, number> | null,
  // Regularization (Yang et al. 2020: orthogonality λ_o, singular-value sparsity λ_s)
  sparsity: 'hoyer',
  lambdaO: 1,
  lambdaS: 0.07,
  // Fraction of the training steps before the sparsity term starts (0 = from the first step).
  sparsityStart: 0,
  // Fraction of the training steps after which the sparsity term stops (1 = to the last step).
  sparsityEnd: 1,
  // Optimizer
  optimizer: 'sgd',
  lr: 0.1,
  momentum: 0.9,
  nesterov: true,
  weightDecay: 5e-4,
  // Which parameters weight decay applies to: 'all' (PyTorch's SGD default and the paper's recipe)
  // or 'factors' (U, V and plain conv/dense weights; not singular values, BN parameters, biases).
  // Measured with bench/torch_train.py: 'factors' cost ~20 points of test accuracy after epoch 1.
  decayOn: 'all',
  adamBetas: [0.9, 0.999] as [number, number],
  adamEps: 1e-8,
  // Learning-rate schedule
  schedule: 'onecycle',
  // OneCycleLR's cycle_momentum: momentum (Adam: β1) goes maxMomentum -> baseMomentum while the lr
  // rises, then back, replacing --momentum. PyTorch's default, and part of the reference recipe.
  cycleMomentum: true,
  baseMomentum: 0.85,
  maxMomentum: 0.95,
  milestones: [81, 122] as number[],
  gamma: 0.1,
  warmupEpochs: 0,
  pctStart: 0.3,
  divFactor: 25,
  finalDivFactor: 1e4,
  // Training loop
  epochs: 3,
  batch: 128,
  seed: 0,
  augment: true,
  // Cutout (DeVries & Taylor 2017) on top of crop + flip: a square of this side (pixels), centred
  // anywhere in the image and clipped at its border, set to the data set's mean. 0: off.
  cutout: 0,
  data: null as string | null,
  limitTrain: null as number | null,
  limitTest: null as number | null,
  // Before the training (`start --plain-epochs N`): train the plain ResNet of the same depth (no
  // SVD, no regularizer) for plainEpochs at peak lr plainLr (null: the default recipe's lr), write
  // it as its exact full-rank SVD (as `decompose` does) and train the method from there; with
  // distillation and no teacher named, the plain model teaches. 0: off (train from a random init
  // or --from).
  plainEpochs: 0,
  plainLr: null as number | null,
  // The pipeline after training (`start --prune-energy e`): prune at energy e, evaluate a sweep of
  // energies without fine-tuning (the accuracy-vs-MACs curve), then fine-tune for finetuneEpochs
  // at peak lr finetuneLr (null: lr / 10) without the sparsity term. null: train only.
  pruneEnergy: null as number | null,
  // Or a budget: prune at the smallest energy whose model costs at most pruneMacs MACs per image.
  pruneMacs: null as number | null,
  // How the energy is shared out among the layers (layerEnergies): 0, the paper's rule, every layer
  // gives up the same fraction e; α > 0 weights each layer's by (its MACs per rank / the costliest's)^α.
  pruneMacWeight: 0,
  finetuneEpochs: 0,
  finetuneLr: null as number | null,
  // The fine-tuning's orthogonality weight and weight decay; null: the training's lambdaO and
  // weightDecay (e.g. 0.1 and 1e-4 to loosen both once the ranks are fixed).
  finetuneLambdaO: null as number | null,
  finetuneWeightDecay: null as number | null,
  // Then stochastic weight averaging of the fine-tuning's last finetuneAverage epoch-end checkpoints
  // (batch-norm statistics re-estimated on the training split), evaluated and saved beside them.
  // 0: off; otherwise at least 2 and at most finetuneEpochs.
  finetuneAverage: 0,
  // Knowledge distillation (Hinton et al. 2015): the data term becomes (1 − α)·CE + α·T²·KL(teacher
  // ‖ student) at temperature T, with the teacher's eval-mode logits on the same augmented batch.
  // α 0 = off. With the pipeline's fine-tuning the teacher is the trained model unless `teacher`
  // names a checkpoint; otherwise `teacher` is required. teacherRanks are the teacher checkpoint's
  // per-layer ranks (filled in from it; null = full rank). teacherArch is the teacher's own model,
  // svd and decomposition where they differ from the run's (filled in from its checkpoint; null =
  // the run's), so a channel run can learn from a spatial or plain teacher, or a deeper one.
  distillAlpha: 0,
  distillTemperature: 4,
  teacher: null as string | null,
  teacherRanks: null as Record<string, number> | null,
  teacherArch: null as { model: (typeof MODELS)[number]; svd: boolean; decomposition: (typeof DECOMPOSITIONS)[number] } | null,
  // More teachers beside `teacher` (an ensemble): each with its own ranks and architecture, filled
  // in from its checkpoint as for `teacher`. The target is the mean of all the teachers' softened
  // outputs (softmax at temperature T).
  extraTeachers: [] as {
    teacher: string;
    teacherRanks: Record<string, number> | null;
    teacherArch: { model: (typeof MODELS)[number]; svd: boolean; decomposition: (typeof DECOMPOSITIONS)[number] } | null;
  }[],
  // In the pipeline with fine-tuning, distillation is the fine-tuning's alone unless distillTraining
  // is on: then `teacher` (required) teaches the training too, and the fine-tuning after it.
  distillTraining: false,
  sweepEnergies: [0.001, 0.003, 0.01, 0.03, 0.05, 0.1, 0.2] as number[],
  // Coordinator / workers (run-local: not part of the config hash)
  host: '127.0.0.1',
  port: 7733,
  minWorkers: 1,
  spawn: 0,
  out: 'runs/latest',
  resume: false,
  from: null as string | null,
  token: null as string | null,
  insecure: false,
  evalEvery: 1,
  checkpointEvery: 200,
  keepCheckpoints: 3,
  stepTimeoutMs: 120_000,
  stallWarnMs: 30_000,
  stallAction: 'drop',
  handshakeTimeoutMs: 30_000,
  maxMessageBytes: 256 * 1024 * 1024,
  maxWorkerBatch: 256,
  backend: 'auto',
  // oneDNN threads per worker on the native engine: one worker per core is the default layout.
  threads: 1,
});

/** Environment variables that feed the config (precedence: flags > env > file > defaults). */
export const ENV_VARS = Object.freeze({
  data: 'SVD_TRAIN_DATA',
  token: 'SVD_TRAIN_TOKEN',
});

/** The official CIFAR-10 binary tarball and its md5 (from the dataset page). */
export const CIFAR10_URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz';
export const CIFAR10_TARBALL_MD5 = 'c32a1d4ab5d03f1284b67883e8d87530';
/** Folder name inside the tarball, also used as the cache folder name. */
export const CIFAR10_DIRNAME = 'cifar-10-batches-bin';
/** Cache root below $XDG_CACHE_HOME (or ~/.cache). */
export const CACHE_APP_DIRNAME = 'svd-train';
