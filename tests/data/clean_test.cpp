// Text cleaning steps one by one, then the whole cleaner on real text.
#include "lmforge/data/clean.h"

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

namespace lmforge::data {
namespace {

TEST(Clean, StripHtml) {
  int64_t tags = 0;
  EXPECT_EQ(strip_html("<p>Hello&nbsp;<b>world</b> &amp; you</p><script>var x = '<p>';</script>ok", &tags),
            "\nHello\u00a0 world  & you\nok");
  EXPECT_EQ(tags, 5);                                                     // <script> and its contents count once
  EXPECT_EQ(strip_html("a < b and c > d, 3<4"), "a < b and c > d, 3<4");  // not tags
  EXPECT_EQ(strip_html("x<!-- hidden <b> -->y&#65;&#x42;&bogus;"), "xyAB&bogus;");
  EXPECT_EQ(strip_html("<STYLE>p{}</style>T"), "T");
  EXPECT_EQ(strip_html("unterminated <a href="), "unterminated <a href=");
}

TEST(Clean, ControlCharsAndLineEnds) {
  int64_t n = 0;
  EXPECT_EQ(strip_control_chars("a\x01"
                                "b\r\nc\rd\xEF\xBB\xBF"
                                "e\xC2\x85"
                                "f\tg",
                                &n),
            "ab\nc\nde\nf\tg");
  EXPECT_EQ(n, 2);  // \x01 and the BOM; U+0085 (NEL) is a line break
}

TEST(Clean, Whitespace) {
  EXPECT_EQ(normalize_whitespace("  a \t b\u00a0c  \n\n\n\n d \u3000e\n  "), "a b c\n\nd e");
  EXPECT_EQ(normalize_whitespace("x\u2028y"), "x\ny");
  EXPECT_EQ(normalize_whitespace(" \n "), "");
}

TEST(Clean, NormalFormsAndPii) {
  CleanOptions o;
  o.normal_form = NormalForm::kNfkc;
  o.mask_pii = true;
  TextCleaner c(o);
  CleanCounts n;
  const std::string out = c.clean(
      "\uFF21\uFF22 e\u0301 mail john.doe+x@mail.example.co.uk or call +1 (555) 123-4567, 555-123-4567; "
      "host 192.168.10.254 not 999.1.1.1 nor version 1.2.3.4.5, date 2024-01-15, 1.5 million",
      &n);
  EXPECT_EQ(out,
            "AB \u00e9 mail <EMAIL> or call <PHONE>, <PHONE>; host <IP> not 999.1.1.1 nor version 1.2.3.4.5, "
            "date 2024-01-15, 1.5 million");
  EXPECT_EQ(n.emails, 1);
  EXPECT_EQ(n.phones, 2);
  EXPECT_EQ(n.ips, 1);
  EXPECT_TRUE(n.normalized);
  CleanOptions nfc;
  EXPECT_EQ(TextCleaner(nfc).clean("\uFF21e\u0301"), "\uFF21\u00e9");  // NFC keeps compatibility forms
}

TEST(Clean, RealLicenceTextIsStable) {
  std::ifstream f("/usr/share/common-licenses/GPL-3");
  if (!f) GTEST_SKIP() << "no GPL-3 text";
  std::stringstream ss;
  ss << f.rdbuf();
  TextCleaner c(CleanOptions{});
  const std::string once = c.clean(ss.str());
  EXPECT_GT(once.size(), ss.str().size() * 8 / 10);
  EXPECT_EQ(c.clean(once), once);  // idempotent
  EXPECT_EQ(once.find("  "), std::string::npos);
  EXPECT_EQ(once.find("\n\n\n"), std::string::npos);
}

}  // namespace
}  // namespace lmforge::data
