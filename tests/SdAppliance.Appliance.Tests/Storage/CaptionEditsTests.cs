using SdAppliance.Appliance.Storage;
using SdAppliance.Formats;

namespace SdAppliance.Appliance.Tests.Storage;

public sealed class CaptionEditsTests
{
    [Theory]
    [InlineData("a cat,  sitting , ,red", new[] { "a cat", "sitting", "red" })]
    [InlineData("  ", new string[0])]
    [InlineData(null, new string[0])]
    [InlineData("one", new[] { "one" })]
    public void Tags_are_split_at_commas_trimmed_and_empty_ones_dropped_as_kohya_splits_them(string? caption, string[] tags) =>
        Assert.Equal(tags, CaptionEdits.Tags(caption));

    [Theory]
    [InlineData("a cat, sitting", "sks", "sks, a cat, sitting")]
    [InlineData("sks, a cat", "sks", "sks, a cat")]              // first already: unchanged
    [InlineData("a cat, sks, red", " sks ", "sks, a cat, red")]   // moved to the front, not doubled
    [InlineData(null, "sks", "sks")]                              // no caption file: the word alone
    [InlineData("", "sks", "sks")]
    public void A_trigger_word_goes_first_once(string? caption, string trigger, string expected) =>
        Assert.Equal(expected, CaptionEdits.Apply(new CaptionEdit(CaptionEditKind.AddTrigger, trigger), caption));

    [Fact]
    public void A_caption_an_edit_does_not_touch_stays_byte_for_byte()
    {
        const string Odd = "sks,a cat ,  red";
        Assert.Same(Odd, CaptionEdits.Apply(new CaptionEdit(CaptionEditKind.AddTrigger, "sks"), Odd));
        Assert.Same(Odd, CaptionEdits.Apply(new CaptionEdit(CaptionEditKind.RemoveTag, "blue"), Odd));
        Assert.Same(Odd, CaptionEdits.Apply(new CaptionEdit(CaptionEditKind.Replace, "dog", "cat"), Odd));
    }

    [Fact]
    public void Remove_tag_takes_out_whole_equal_tags_only()
    {
        var edit = new CaptionEdit(CaptionEditKind.RemoveTag, "cat");
        Assert.Equal("a cat, red", CaptionEdits.Apply(edit, "a cat, cat, red, cat"));
        Assert.Equal("Cat", CaptionEdits.Apply(edit, "Cat"));   // case-sensitive, as kohya's tags
        Assert.Equal("", CaptionEdits.Apply(edit, "cat"));
    }

    [Fact]
    public void Find_and_replace_is_plain_text_and_leaves_missing_captions_alone()
    {
        var edit = new CaptionEdit(CaptionEditKind.Replace, "cat", "dog");
        Assert.Equal("a dog, dogs", CaptionEdits.Apply(edit, "a cat, cats"));
        Assert.Equal("red", CaptionEdits.Apply(new CaptionEdit(CaptionEditKind.Replace, "blue, "), "blue, red"));
        Assert.Null(CaptionEdits.Apply(edit, null));
        Assert.Equal(1, CaptionEdits.CountChanged(edit, ["a cat", "a dog", null]));
    }

    [Theory]
    [InlineData(CaptionEditKind.AddTrigger, " ", "trigger")]
    [InlineData(CaptionEditKind.AddTrigger, "a, b", "trigger")]
    [InlineData(CaptionEditKind.Replace, "", "find")]
    [InlineData(CaptionEditKind.RemoveTag, "", "tag")]
    public void Empty_or_comma_edits_are_refused_naming_the_field(CaptionEditKind kind, string text, string field)
    {
        var e = Assert.ThrowsAny<UserInputException>(() => CaptionEdits.Check(new CaptionEdit(kind, text)));
        Assert.Equal(field, e.Subject);
        Assert.NotNull(e.Fix);
    }

    [Fact]
    public void Frequencies_count_captions_not_occurrences_most_frequent_first()
    {
        var counts = CaptionEdits.Frequencies(["red, cat, red", "cat, blue", null, "cat"]);
        Assert.Equal([new TagCount("cat", 3), new TagCount("blue", 1), new TagCount("red", 1)], counts);
    }
}
