namespace SdAppliance.Training.Tests;

public sealed class TrainingConfigTests
{
    [Fact]
    public void TheDeviceKeepsItsRunJsonNameAndFlag()
    {
        var config = new TrainingConfig { DeviceName = "cuda:1" };
        Assert.Contains("\"device\": \"cuda:1\"", config.ToJson());
        Assert.Contains("device", TrainingConfig.Fields.Select(TrainingConfig.FieldName));
        Assert.Equal("cuda:0", config.With(new Dictionary<string, string> { ["device"] = "cuda:0" }).DeviceName);
    }

    [Fact]
    public void NamedChoicesParseOnceIntoEnumsAndAnUnknownNameListsTheValidOnes()
    {
        Assert.Equal(TrainingMethodKind.TextualInversion, TrainingConfig.MethodChoices.Parse("textual-inversion"));
        Assert.Equal(AutocastPrecision.BFloat16, TrainingConfig.PrecisionChoices.Parse("bf16"));
        // kohya's optimizer names are case-insensitive.
        Assert.Equal(OptimizerKind.AdamW, TrainingConfig.OptimizerChoices.Parse("adamw"));
        var error = Assert.Throws<TrainingConfigException>(() => TrainingConfig.MethodChoices.Parse("magic"));
        Assert.Equal("method: 'magic' is not one of lora, dreambooth, textual-inversion, finetune, hypernetwork", error.Message);
        Assert.StartsWith("mixed_precision: 'fp8'", Assert.Throws<TrainingConfigException>(() => new TrainingConfig { Output = "o", Data = "d", MixedPrecision = "fp8" }.Validate()).Message);
    }

    [Theory]
    // max_train_epochs × batches over the accumulation, rounded up; the epochs follow from the steps.
    [InlineData(null, 100, 6, 1, 100, 17)]
    [InlineData(5, 100, 6, 1, 30, 5)]
    [InlineData(5, 100, 6, 4, 8, 6)]
    [InlineData(1, 100, 1, 2, 1, 2)]
    public void StepsAndEpochsFollowKohyasCount(int? epochs, int steps, int batchesPerEpoch, int accumulation, int expectedSteps, int expectedEpochs)
    {
        var config = new TrainingConfig { MaxTrainEpochs = epochs, MaxTrainSteps = steps, GradientAccumulationSteps = accumulation };
        Assert.Equal(expectedSteps, config.TotalSteps(batchesPerEpoch));
        Assert.Equal(expectedEpochs, config.Epochs(batchesPerEpoch));
        Assert.Equal(epochs is { } e ? $"{e} epoch{(e == 1 ? "" : "s")}" : $"{steps} steps", config.DescribeLength());
    }

    [Fact]
    public void ScaleLrMultipliesTheLearningRateByTheImagesPerStepButNotAGivenTextEncoderLr()
    {
        var config = new TrainingConfig { LearningRate = 1e-4, TrainBatchSize = 4, GradientAccumulationSteps = 2, ScaleLr = true };
        Assert.Equal(8e-4, config.ScaledLearningRate(), 1e-15);
        Assert.Equal(8e-4, config.ScaledTextEncoderLr(), 1e-15);
        Assert.Equal(5e-5, (config with { TextEncoderLr = 5e-5 }).ScaledTextEncoderLr());
        Assert.Equal(1e-4, (config with { ScaleLr = false }).ScaledLearningRate());
    }

    [Fact]
    public void ProdigyRefusesASecondLearningRateNamingTheFieldAndTheFix()
    {
        var config = new TrainingConfig { Output = "o", Data = "d", Optimizer = "prodigy", LearningRate = 1 };
        config.Validate();
        (config with { TextEncoderLr = 0 }).Validate();  // a frozen text encoder is allowed, as the reference allows lr 0
        var error = Assert.Throws<TrainingConfigException>(() => (config with { TextEncoderLr = 0.5 }).Validate());
        Assert.Equal("text_encoder_lr", error.Subject);
        Assert.Contains("set it to learning_rate (1)", error.Message);
        Assert.StartsWith("d_coef: ", Assert.Throws<TrainingConfigException>(() => (config with { DCoef = 0 }).Validate()).Message);
    }

    [Fact]
    public void Use8BitAdamTurnsAdamWIntoAdamW8bitAndRefusesAnotherOptimizer()
    {
        var config = new TrainingConfig { Output = "o", Data = "d" };
        Assert.Equal(OptimizerKind.AdamW, config.ResolveOptimizer());
        Assert.Equal(OptimizerKind.AdamW8bit, (config with { Use8BitAdam = true }).ResolveOptimizer());
        Assert.Equal(OptimizerKind.Lion8bit, (config with { Optimizer = "lion8bit" }).ResolveOptimizer());
        Assert.Equal("use_8bit_adam", TrainingConfig.FieldName(typeof(TrainingConfig).GetProperty(nameof(TrainingConfig.Use8BitAdam))!));
        var error = Assert.Throws<TrainingConfigException>(() => (config with { Use8BitAdam = true, Optimizer = "Lion" }).Validate());
        Assert.Equal("use_8bit_adam", error.Subject);
        Assert.Contains("set optimizer to AdamW8bit", error.Message);
    }

    [Fact]
    public void ARefusalsLeadingFieldIsItsSubjectAsTheApiNamesIt()
    {
        var error = Assert.Throws<TrainingConfigException>(() => TrainingConfig.MethodChoices.Parse("magic"));
        Assert.Equal("method", error.Subject);
        Assert.Equal("'magic' is not one of lora, dreambooth, textual-inversion, finetune, hypernetwork", error.Problem);
        Assert.Equal("concepts[2].class_data", new TrainingConfigException("concepts[2].class_data: missing").Subject);
        var prose = new TrainingConfigException("the run stopped: no state to resume");  // no field: the whole text is the problem
        Assert.Null(prose.Subject);
        Assert.Equal(prose.Message, prose.Problem);
    }
}
